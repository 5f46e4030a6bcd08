"""Jitter (sisy_pg.policies): each instant's delay, the same for every planner, within the task's jitter."""

import datetime as dt

from sisy_pg import policies
from sisy_pg.policies import Due, Policy
from sisy_pg.schedule import PlanInput

UTC = dt.timezone.utc
LEAD = dt.timedelta(milliseconds=200)


def utc(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def decide(instant, claimed_at, schedule="0 * * * *", **options):
    due = Due(7, PlanInput(schedule, "UTC"), Policy(**options), instant, claimed_at)
    return policies.decide(due, lead=LEAD, all_limit=10)


def test_the_delay_is_the_same_for_every_planner_and_spreads_within_the_jitter():
    instants = [utc("2026-03-01 10:00") + dt.timedelta(hours=n) for n in range(200)]
    delays = [policies.jitter_delay(7, instant, 2.0) for instant in instants]
    assert delays == [policies.jitter_delay(7, instant, 2.0) for instant in instants]
    assert all(0 <= delay <= 2.0 for delay in delays)
    assert min(delays) < 0.5 and max(delays) > 1.5  # spread, not one value
    # Tasks sharing an instant get different delays.
    assert len({policies.jitter_delay(task, instants[0], 2.0) for task in range(20)}) > 10
    assert policies.jitter_delay(7, instants[0], 0) == 0


def test_a_fire_records_its_delay_and_starts_that_much_after_its_instant():
    instant = utc("2026-03-01 10:00")
    (run,) = decide(instant, instant - LEAD, jitter=30).records
    delay = policies.jitter_delay(7, instant, 30)
    assert run.details == {
        "jitter": delay,
        "due_at": (instant + dt.timedelta(seconds=delay)).isoformat(),
    }


def test_a_catch_up_is_delayed_from_its_claim_and_a_run_now_is_not_delayed():
    instant, claimed_at = utc("2026-03-01 10:00"), utc("2026-03-01 10:05")
    (missed, catch_up) = decide(instant, claimed_at, schedule="* * * * *", jitter=30).records
    delay = policies.jitter_delay(7, catch_up.instant, 30)
    assert missed.status == "missed" and "jitter" not in missed.details
    assert catch_up.details["due_at"] == (claimed_at + dt.timedelta(seconds=delay)).isoformat()
    # An instant off the schedule: a writer asked for a run now.
    off = utc("2026-03-01 10:17:03")
    (run,) = decide(off, off, jitter=30).records
    assert "jitter" not in run.details
