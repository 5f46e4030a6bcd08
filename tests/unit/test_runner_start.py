"""How a job's runs get slots and what the runner makes of the database's answer to starting them.

The slots are a worker's real :class:`~sisy_pg.slots.CallableSlots` (no
threads start until a callable is submitted); the answers are the
``StartedRun`` rows ``sisy_start_run_v1`` returns, written by hand.
"""

import datetime as dt

import pytest

from sisy_pg.models import Task
from sisy_pg.runner import _by_error, _free_tickets, _over_share, _StartAnswer
from sisy_pg.slots import CallableSlots, OverShare
from sisy_pg.store import StartedRun
from sisy_pg.vocabulary import NotStarted, RunStatus

UTC = dt.timezone.utc
INSTANT = dt.datetime(2026, 5, 5, 10, 0, tzinfo=UTC)


def holding(slots, *tasks):
    """``slots`` with one slot held by a run of each of ``tasks``."""
    for task in tasks:
        assert slots.try_take(task) is not None
    return slots


# --- which runs of a job take slots now --------------------------------------------------


def test_runs_of_a_task_at_its_share_are_set_apart_and_the_others_keep_their_order():
    slots = holding(CallableSlots(size=4, share=1), "a")
    over, within = _over_share(slots, [(1, "a"), (2, "b"), (3, "a"), (4, "c")])
    assert [run_id for run_id, _ in over] == [1, 3]
    assert all(isinstance(exc, OverShare) and exc.task == "a" for _, exc in over)
    assert within == [(2, "b"), (4, "c")]


def test_a_task_holding_slots_when_none_is_free_for_it_is_over_its_share():
    slots = holding(CallableSlots(size=3, share=2), "a", "b")  # one free, kept for a newcomer
    over, within = _over_share(slots, [(1, "a"), (2, "c")])
    ((run_id, exc),) = over
    assert run_id == 1 and "none is free" in str(exc)
    assert within == [(2, "c")]


def test_a_batch_takes_the_free_slots_in_order():
    slots = holding(CallableSlots(size=4, share=4), "a")
    tickets = _free_tickets(slots, [(2, "a"), (3, "b"), (4, "c")])
    assert list(tickets) == [2, 3, 4]
    assert len(set(tickets.values())) == 3 and slots.free == 0
    assert (slots.held_by("a"), slots.held_by("b"), slots.held_by("c")) == (2, 1, 1)


def test_a_batch_stops_at_the_first_run_no_slot_is_free_for():
    slots = holding(CallableSlots(size=2, share=2), "a")
    # Run 3 of task b takes the last slot; none is left for c, nor for b's run after it.
    tickets = _free_tickets(slots, [(3, "b"), (4, "c"), (5, "b")])
    assert list(tickets) == [3]


def test_a_batch_passes_over_a_task_that_reached_its_share_within_it():
    slots = holding(CallableSlots(size=5, share=2), "a")
    tickets = _free_tickets(slots, [(2, "a"), (3, "a"), (4, "b")])
    assert list(tickets) == [2, 4]  # run 3 is left pending: skipped (fair share) next turn
    assert slots.held_by("a") == 2


def test_runs_refused_in_the_same_words_are_recorded_together():
    slots = holding(CallableSlots(size=3, share=2), "a", "a", "b")  # a at its share, none free
    over, _ = _over_share(slots, [(1, "a"), (2, "b"), (3, "a"), (4, "c")])
    by_error = _by_error(over)
    assert sorted(by_error.values()) == [[1, 3], [2]]
    assert sorted(by_error) == sorted({str(exc) for _, exc in over})


# --- the database's answer ---------------------------------------------------------------


def started(run_id, status=RunStatus.RUNNING, *, wait=None, task=True):
    running = status == RunStatus.RUNNING
    return StartedRun(
        run_id=run_id,
        status=status,
        scheduled_for=INSTANT if running else None,
        attempt=1 if running else None,
        started_at=INSTANT if running else None,
        wait=wait,
        task=Task(pk=run_id) if running and task else None,
    )


def test_runs_started_keep_their_slot_and_are_carried():
    runs = [started(1), started(2)]
    answer = _StartAnswer.of(runs)
    assert answer.carried == runs
    assert (answer.again, answer.slots_back, answer.clock_wrong) == ([], [], False)


@pytest.mark.parametrize(
    "status",
    [
        RunStatus.MISSED,
        RunStatus.SKIPPED,
        RunStatus.CANCELLED,
        NotStarted.MISSING,
        NotStarted.STARTED_ELSEWHERE,
        NotStarted.BROKEN,
    ],
)
def test_a_run_not_started_gives_its_slot_back_and_is_carried_to_say_why(status):
    runs = [started(1), started(2, status), started(3)]
    answer = _StartAnswer.of(runs)
    assert answer.carried == runs
    assert answer.slots_back == [2] and answer.again == []


def test_early_and_busy_runs_are_asked_again_after_the_longest_wait():
    early, busy = started(2, NotStarted.EARLY, wait=0.3), started(4, NotStarted.BUSY, wait=0.5)
    answer = _StartAnswer.of([started(1), early, started(3, RunStatus.MISSED), busy])
    assert answer.again == [early, busy]
    assert [run.run_id for run in answer.carried] == [1, 3]
    assert answer.slots_back == [2, 3, 4]
    assert answer.wait == 0.5


@pytest.mark.parametrize(
    ("statuses", "wrong"),
    [
        ((NotStarted.BUSY,), False),
        ((NotStarted.EARLY,), True),
        ((NotStarted.BUSY, NotStarted.EARLY), True),
    ],
)
def test_only_an_early_run_says_the_estimate_of_the_database_s_clock_is_wrong(statuses, wrong):
    answer = _StartAnswer.of([started(n, status, wait=0.1) for n, status in enumerate(statuses)])
    assert answer.clock_wrong is wrong


def test_a_run_asked_again_without_a_wait_is_asked_again_at_once():
    answer = _StartAnswer.of([started(1, NotStarted.BUSY)])
    assert answer.again and answer.wait == 0.0
