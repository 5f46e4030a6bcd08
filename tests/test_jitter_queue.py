"""Jitter and per-task queues (docs/jitter-and-queues.md)."""

import asyncio
import datetime as dt

import pytest
from django.db import connection

from sisy_pg import policies, procrastinate_seam, worker
from sisy_pg.models import TaskRun, task_with_callable
from sisy_pg.policies import Due, Policy
from sisy_pg.schedule import PlanInput
from tests.conftest import WorkerProcess, wait_until
from tests.testapp import jobs

UTC = dt.timezone.utc
LEAD = dt.timedelta(milliseconds=200)
EVERY_FIVE_SECONDS = "* * * * * */5"  # sisy's sixth field is seconds


def utc(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def decide(instant, claimed_at, schedule="0 * * * *", **options):
    due = Due(7, PlanInput(schedule, "UTC"), Policy(**options), instant, claimed_at)
    return policies.decide(due, lead=LEAD, all_limit=10)


def sql(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def run_planner(method):
    async def go():
        planner = worker.make_planner(
            procrastinate_seam.WorkerOptions(queues=None, stalled_worker_timeout=30)
        )
        conn = await planner.store.connect()
        try:
            return await getattr(planner, method)(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


# --- the delay: derived, not drawn (no database) ------------------------------------------


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


# --- held without a job, released on its task's queue -----------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_jittered_run_holds_no_job_until_its_delay_then_goes_to_its_queue():
    task = task_with_callable(jobs.record, label="jittered", schedule="0 0 1 1 *")
    task.timezone = "UTC"
    task.options = {"jitter": 3600, "queue": "heavy"}
    task.save()
    # Due: this year's instant, past (a catch-up, delayed from its claim).
    sql("UPDATE sisy_task SET next_run = date_trunc('year', now()) WHERE id = %s", [task.pk])
    assert run_planner("fire_due") == 1
    run = TaskRun.objects.get(task=task)
    assert run.status == "queued" and run.job_id is None  # held: no worker slot taken
    assert 0 <= run.details["jitter"] <= 3600
    assert run_planner("release_jittered_runs") == 0  # not yet due
    due_now = dt.datetime.now(UTC).isoformat()
    sql(
        "UPDATE sisy_taskrun SET details = details || jsonb_build_object('due_at', %s::text) "
        "WHERE id = %s",
        [due_now, run.pk],
    )
    assert run_planner("release_jittered_runs") == 1
    run.refresh_from_db()
    assert sql(
        "SELECT queue_name, (args ->> 'at')::float8 FROM procrastinate_jobs WHERE id = %s",
        [run.job_id],
    ) == [("heavy", dt.datetime.fromisoformat(due_now).timestamp())]


# --- real workers ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_jitter_spreads_the_starts_and_a_queue_has_its_own_worker(start_worker):
    start_worker("w1", "--queues", "sisy", "--concurrency", "16")
    # A worker of the "heavy" queue alone: it runs jobs, plans nothing.
    heavy = WorkerProcess("heavy", ("--queues", "heavy", "--concurrency", "2"))
    try:
        wait_until(lambda: "sisy planner not started" in heavy.output(), timeout=60)
        spread = []
        for n in range(8):
            task = task_with_callable(jobs.record, label=f"jitter {n}", schedule=EVERY_FIVE_SECONDS)
            task.options = {"jitter": 2}
            task.save()
            spread.append(task)
        routed = task_with_callable(jobs.record, label="heavy", schedule="* * * * * *")
        routed.options = {"queue": "heavy"}
        routed.save()
        wait_until(
            lambda: (
                TaskRun.objects.filter(task__in=spread, status="succeeded").count() >= len(spread)
                and TaskRun.objects.filter(task=routed, status="succeeded").count() >= 2
            ),
            timeout=20,
        )
        runs = list(TaskRun.objects.filter(task__in=spread, status="succeeded"))
        for run in runs:
            delay = dt.timedelta(seconds=run.details["jitter"])
            assert dt.datetime.fromisoformat(run.details["due_at"]) == run.scheduled_for + delay
            # Never before its delay (the database judges); then well within the grace.
            assert delay <= run.started_at - run.scheduled_for < delay + dt.timedelta(seconds=10)
            assert run.worker.endswith(":w1")
        delays = sorted(run.details["jitter"] for run in runs)
        assert delays[0] >= 0 and delays[-1] <= 2 and delays[-1] - delays[0] > 0.2
        routed_runs = TaskRun.objects.filter(task=routed, status="succeeded")
        assert {run.worker.rsplit(":", 1)[1] for run in routed_runs} == {"heavy"}
    finally:
        heavy.stop()
