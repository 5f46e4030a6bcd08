"""The jitter in ``policies.decide``: which records get a delay, and what else they keep.

test_policies.py decides without jitter; test_jitter.py has the delay itself
(derived, not drawn) and a fire's or catch-up's ``due_at``. Here: which records
a delay leaves alone, and what it keeps of the others.
"""

import datetime as dt

import pytest

from sisy_pg import policies
from sisy_pg.policies import Due, OtherRun, Policy
from sisy_pg.schedule import PlanInput
from sisy_pg.vocabulary import RunStatus

UTC = dt.timezone.utc
LEAD = dt.timedelta(milliseconds=200)
TEN = dt.datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
HOURLY = PlanInput("0 * * * *", "UTC")
JITTER = 30.0
EARLIER = OtherRun(run_id=40, instant=TEN - dt.timedelta(hours=1))


def fire(claimed_at=TEN - LEAD, *, waiting=None, running=None, **options):
    due = Due(7, HOURLY, Policy(jitter=JITTER, **options), TEN, claimed_at, waiting, running)
    (record,) = policies.decide(due, lead=LEAD, all_limit=10).records
    return record


@pytest.mark.parametrize(
    ("options", "waiting", "running"),
    [
        pytest.param({}, EARLIER, None, id="coalesced"),
        pytest.param({"overlap": "skip"}, None, EARLIER, id="overlap"),
        pytest.param(
            {"missed": "all"}, OtherRun(41, EARLIER.instant, count=10), None, id="backlog"
        ),
    ],
)
def test_a_fire_that_is_not_run_is_not_delayed(options, waiting, running):
    record = fire(waiting=waiting, running=running, **options)
    assert record.status == RunStatus.SKIPPED
    assert "jitter" not in record.details and "due_at" not in record.details


def test_a_buffered_fire_keeps_what_it_waits_behind_and_is_delayed():
    record = fire(running=EARLIER, overlap="buffer_one")
    delay = policies.jitter_delay(7, TEN, JITTER)
    assert record.status == RunStatus.QUEUED
    assert record.details == {
        "buffered_behind": EARLIER.run_id,
        "jitter": delay,
        "due_at": (TEN + dt.timedelta(seconds=delay)).isoformat(),
    }


@pytest.mark.parametrize(
    "claimed_at",
    [TEN - LEAD, TEN, TEN + dt.timedelta(seconds=20)],
    ids=["ahead", "on the instant", "late within its grace"],
)
def test_every_planner_that_fires_an_instant_delays_it_the_same(claimed_at):
    assert fire(claimed_at).details == fire().details


def test_the_delay_is_to_the_millisecond():
    instants = [TEN + dt.timedelta(hours=n) for n in range(100)]
    delays = [policies.jitter_delay(7, instant, 1.5) for instant in instants]
    assert all(round(delay, 3) == delay for delay in delays)
    assert len(set(delays)) > 50  # and not rounded to a few values


@pytest.mark.parametrize("jitter", [0, -1.0])
def test_no_jitter_is_no_delay(jitter):
    assert policies.jitter_delay(7, TEN, jitter) == 0.0
    due = Due(7, HOURLY, Policy(jitter=jitter), TEN, TEN - LEAD)
    (record,) = policies.decide(due, lead=LEAD, all_limit=10).records
    assert record.details == {}
