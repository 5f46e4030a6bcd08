"""Jitter and per-task queues (docs/jitter-and-queues.md)."""

import datetime as dt

import pytest

from sisy_pg.models import TaskRun, task_with_callable
from tests.integration.helpers import run_planner, sql
from tests.testapp import jobs

UTC = dt.timezone.utc


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
