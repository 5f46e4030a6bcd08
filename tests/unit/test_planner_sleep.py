"""How long the planner sleeps, and when it ticks: the rules of planner.py, without a database.

A tick ends with the state the database gave (``PlannerState``: seconds from
the database's now to each thing due); ``_seconds_to_sleep`` turns it into a
sleep. The planner's other clocks (its loop time) only pace it: when it polls,
when it reconnects, when it checks the cluster's load.
"""

import itertools

import pytest

from sisy_pg import liveness
from sisy_pg.planner import (
    _CONTENDED_RETRY,
    _RECONNECT_DELAYS,
    _deadline_passed,
    _load_check_due,
    _pause_ended,
    _reconnect_delay,
    _release_due,
    _seconds_to_sleep,
    _tick_due_at,
)
from sisy_pg.store import PlannerState

LEAD = 0.2  # SISY_LEAD_TIME: instants are claimed this far ahead
MAX_SLEEP = 30.0
SOON = _CONTENDED_RETRY  # what is due is held by another transaction: look again soon


def state(
    next_=None, *, deadline=None, pause_end=None, release=None, pending=False, backfills=False
):
    return PlannerState(
        seconds_to_next=next_,
        seconds_to_deadline=deadline,
        pending=pending,
        seconds_to_pause_end=pause_end,
        seconds_to_release=release,
        backfills=backfills,
    )


def sleep(planner_state, *, full_batch=False, planned=0, pauses_ended=0):
    return _seconds_to_sleep(
        planner_state,
        lead_time=LEAD,
        max_sleep=MAX_SLEEP,
        claimed_full_batch=full_batch,
        planned=planned,
        pauses_ended=pauses_ended,
    )


SLEEPS = [
    # (what the tick left, how it went, the sleep)
    pytest.param(state(), {}, MAX_SLEEP, id="nothing due: the longest sleep"),
    pytest.param(state(10.0), {}, 10.0 - LEAD, id="wakes a lead time before the next instant"),
    pytest.param(state(MAX_SLEEP * 3), {}, MAX_SLEEP, id="never longer than max_sleep"),
    pytest.param(
        state(LEAD / 2), {"full_batch": True}, 0.0, id="still due after a full batch: at once"
    ),
    pytest.param(state(-5.0), {"full_batch": True}, 0.0, id="overdue after a full batch: at once"),
    pytest.param(
        state(LEAD / 2), {}, SOON, id="still due after a partial batch: rows held elsewhere"
    ),
    pytest.param(state(LEAD), {}, SOON, id="due exactly a lead time ahead counts as due"),
    pytest.param(
        state(10.0, pending=True), {"planned": 3}, 0.0, id="tasks to plan, some planned: at once"
    ),
    pytest.param(state(10.0, pending=True), {}, SOON, id="tasks to plan, none planned: held"),
    pytest.param(state(10.0, deadline=3.0), {}, 3.0, id="a run's timeout before the instant"),
    pytest.param(state(deadline=3.0), {}, 3.0, id="a run's timeout and nothing else"),
    pytest.param(
        state(10.0, deadline=-1.0), {}, 0.0, id="a timeout still past after closing: at once"
    ),
    pytest.param(state(10.0, pause_end=4.0), {}, 4.0, id="a pause ends before the instant"),
    pytest.param(
        state(10.0, pause_end=0.0), {"pauses_ended": 1}, 0.0, id="pauses ended: plan at once"
    ),
    pytest.param(state(10.0, pause_end=-1.0), {}, SOON, id="pause ended, none resumed: held"),
    pytest.param(
        state(10.0, pause_end=0.0, pending=True),
        {"pauses_ended": 1},
        0.0,
        id="pauses ended come before pending tasks none of which were planned",
    ),
    pytest.param(
        state(10.0, release=5.0), {}, 5.0 - LEAD, id="a jittered run is released a lead ahead"
    ),
    pytest.param(
        state(10.0, release=LEAD / 2), {}, SOON, id="a jittered run still held after a release"
    ),
    pytest.param(
        state(10.0, deadline=8.0, pause_end=9.0, release=7.0),
        {},
        7.0 - LEAD,
        id="the earliest of all: a release",
    ),
    pytest.param(
        state(6.0, deadline=8.0, pause_end=9.0, release=7.0),
        {},
        6.0 - LEAD,
        id="the earliest of all: the instant",
    ),
    pytest.param(state(10.0, backfills=True), {}, 10.0 - LEAD, id="backfills do not wake it"),
]


@pytest.mark.parametrize(("planner_state", "tick", "seconds"), SLEEPS)
def test_the_planner_sleeps_until_the_first_thing_due(planner_state, tick, seconds):
    assert sleep(planner_state, **tick) == pytest.approx(seconds)


def test_the_sleep_is_never_negative_nor_longer_than_max_sleep():
    seconds = (None, -5.0, 0.0, LEAD / 2, LEAD, 3.0, MAX_SLEEP * 2)
    for next_, deadline, pause_end, release, pending, full_batch, done in itertools.product(
        seconds, seconds, seconds, seconds, (False, True), (False, True), (0, 2)
    ):
        planner_state = state(
            next_, deadline=deadline, pause_end=pause_end, release=release, pending=pending
        )
        slept = sleep(planner_state, full_batch=full_batch, planned=done, pauses_ended=done)
        assert 0.0 <= slept <= MAX_SLEEP, planner_state


@pytest.mark.parametrize(
    ("seconds", "passed"), [(None, False), (1.0, False), (0.0, True), (-2.0, True)]
)
def test_a_deadline_passes_at_its_instant(seconds, passed):
    assert _deadline_passed(state(deadline=seconds)) is passed


@pytest.mark.parametrize(
    ("seconds", "ended"), [(None, False), (1.0, False), (0.0, True), (-2.0, True)]
)
def test_a_pause_ends_at_its_instant(seconds, ended):
    assert _pause_ended(state(pause_end=seconds)) is ended


@pytest.mark.parametrize(
    ("seconds", "due"),
    [(None, False), (LEAD * 2, False), (LEAD, True), (0.0, True), (-1.0, True)],
)
def test_a_jittered_run_is_released_a_lead_time_ahead(seconds, due):
    assert _release_due(state(release=seconds), LEAD) is due


# --- its loop's pace ---------------------------------------------------------------------


def test_without_polling_the_next_tick_is_when_the_last_one_said():
    assert _tick_due_at(100.0, 10.0, polling=False, poll_interval=5.0) == 100.0


def test_while_polling_it_ticks_every_poll_interval_at_least():
    assert _tick_due_at(100.0, 10.0, polling=True, poll_interval=5.0) == 15.0


def test_polling_never_puts_off_an_earlier_tick():
    assert _tick_due_at(12.0, 10.0, polling=True, poll_interval=5.0) == 12.0


def test_reconnecting_backs_off_then_repeats_its_longest_delay():
    delays = [_reconnect_delay(failures) for failures in range(len(_RECONNECT_DELAYS) + 5)]
    assert delays == sorted(delays)
    assert delays[0] < delays[-1]
    assert delays[len(_RECONNECT_DELAYS) - 1 :] == [max(_RECONNECT_DELAYS)] * 6


EVERY = liveness.LOAD_CHECK_EVERY


@pytest.mark.parametrize(
    ("since", "housekeeper", "fired", "overloaded", "due"),
    [
        pytest.param(EVERY, True, 1, False, True, id="the housekeeper that fired, on time"),
        pytest.param(EVERY * 5, True, 1, False, True, id="the housekeeper, late"),
        pytest.param(EVERY, False, 1, False, False, id="not the housekeeper: another checks"),
        pytest.param(EVERY / 2, True, 1, False, False, id="too soon after the last check"),
        pytest.param(EVERY, True, 0, False, False, id="idle: the statement is spared"),
        pytest.param(EVERY, True, 0, True, True, id="idle but overload said: its end is due"),
    ],
)
def test_one_planner_checks_the_load_and_only_when_it_may_have_changed(
    since, housekeeper, fired, overloaded, due
):
    assert (
        _load_check_due(since, housekeeper=housekeeper, fired=fired, overloaded=overloaded) is due
    )
