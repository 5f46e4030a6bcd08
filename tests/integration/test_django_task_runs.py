"""The SQL that keeps a run that enqueued a Django task: recorded once, followed, closed, pruned.

Real PostgreSQL, no worker: the functions are called as the worker calls them
(test_django_tasks_e2e.py runs them for real).
"""

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone

from sisy_pg import task_results
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.integration.helpers import sql
from tests.testapp import scheduled_tasks

pytestmark = pytest.mark.django_db

STALLED_AFTER = dt.timedelta(minutes=10)


@pytest.fixture
def task():
    made = task_with_callable(scheduled_tasks.add, label="adds", userdata={"a": 1})
    made.save()
    return made


def running_run(task, seconds_ago=1, **details):
    instant = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=seconds_ago)
    return TaskRun.objects.create(
        task=task, scheduled_for=instant, status="running", started_at=instant, details=details
    )


def enqueued(run, result_id="r-1", job_id=None):
    ((recorded,),) = sql(
        "SELECT sisy_task_enqueued_v1(%s, %s, 'default', %s)", [run.pk, result_id, job_id]
    )
    return recorded


def test_an_enqueue_is_recorded_once(task):
    run = running_run(task)
    assert enqueued(run, "first")
    assert not enqueued(run, "second")  # a retry after a lost acknowledgement, say
    run.refresh_from_db()
    assert run.details["task_result_id"] == "first"
    assert "task_job_id" not in run.details  # another backend's


def test_a_run_closed_meanwhile_records_no_enqueue(task):
    run = running_run(task)
    TaskRun.objects.filter(pk=run.pk).update(status="timed_out")
    assert not enqueued(run)


def test_a_run_that_enqueued_is_never_retried_nor_interrupted(task):
    run = running_run(task)
    enqueued(run)
    ((retry_at,),) = sql(
        "SELECT sisy_retry_run_v1(%s, 'err', '', interval '1 s', 'sisy', 'sisy.run')", [run.pk]
    )
    assert retry_at is None
    assert sql("SELECT * FROM sisy_interrupt_runs_v1(%s, 'stopping')", [[run.pk]]) == []
    run.refresh_from_db()
    assert run.status == "running"


def test_the_end_of_the_task_ends_its_run_and_a_stranger_s_end_nothing(task):
    run = running_run(task)
    enqueued(run, "42")
    ((started,),) = sql("SELECT sisy_task_result_started_v1('42', 'default', %s)", [timezone.now()])
    assert started == run.pk
    ((again,),) = sql("SELECT sisy_task_result_started_v1('42', 'default', NULL)")
    assert again is None  # the first attempt's start is kept
    finish = (
        "SELECT sisy_task_result_finished_v1(%s, %s, 'failed', 'E: x', 'tb', 'sisy', 'sisy.run')"
    )
    assert sql(finish, ["42", "other backend"]) == [(None,)]
    assert sql(finish, ["43", "default"]) == [(None,)]
    assert sql(finish, ["42", "default"]) == [(run.pk,)]
    run.refresh_from_db()
    assert (run.status, run.error, run.traceback) == ("failed", "E: x", "tb")
    assert run.details["task_started_at"]


def test_overlap_sees_a_run_following_its_task_as_running(task):
    """The planner's claim sees it: a skip-overlap task's next instant is skipped."""
    Task.objects.filter(pk=task.pk).update(
        options={"overlap": "skip"}, schedule="* * * * * *", next_run=timezone.now()
    )
    run = running_run(task)
    enqueued(run)  # another backend's task: followed until task_finished or the timeout
    rows = sql(
        "SELECT running_run_id FROM sisy_claim_due_v1(10, interval '0', %s) WHERE id = %s",
        [STALLED_AFTER, task.pk],
    )
    assert rows == [(run.pk,)]


def _orphans():
    ((closed,),) = sql("SELECT sisy_fail_orphaned_runs_v1(%s, 'sisy', 'sisy.run')", [STALLED_AFTER])
    return closed


def test_the_housekeeping_closes_a_run_whose_task_s_job_is_gone(task):
    gone = running_run(task, seconds_ago=3)
    enqueued(gone, "7", job_id=7_000_000)  # no such procrastinate job
    elsewhere = running_run(task, seconds_ago=2)
    enqueued(elsewhere, "elsewhere")  # another backend: nothing to watch
    with transaction.atomic():
        result = scheduled_tasks.add.enqueue(a=1)  # a job still to do
    waiting = running_run(task, seconds_ago=1)
    enqueued(waiting, result.id, job_id=int(result.id))
    assert _orphans() == 1
    gone.refresh_from_db()
    assert gone.status == "failed" and gone.details["reason"] == "worker_lost"
    assert "Django task" in gone.error
    assert TaskRun.objects.get(pk=elsewhere.pk).status == "running"
    assert TaskRun.objects.get(pk=waiting.pk).status == "running"


def test_retention_deletes_the_task_s_job_and_its_result(task):
    result = scheduled_tasks.add.enqueue(a=1)
    job_id = int(result.id)
    sql("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", [job_id])
    run = running_run(task)
    enqueued(run, result.id, job_id=job_id)
    long_ago = timezone.now() - dt.timedelta(days=30)
    TaskRun.objects.filter(pk=run.pk).update(status="succeeded", finished_at=long_ago)
    assert sql("SELECT sisy_prune_runs_v1(interval '14 days', 100)") == [(1,)]
    assert sql("SELECT count(*) FROM procrastinate_jobs WHERE id = %s", [job_id]) == [(0,)]
    assert sql("SELECT count(*) FROM sisy_task_result WHERE job_id = %s", [job_id]) == [(0,)]


def test_a_receiver_that_fails_leaves_the_task_s_transaction_usable():
    with transaction.atomic():
        assert task_results._follow("SELECT 1/0", [], _Result(), "finished") is None
        assert sql("SELECT 1") == [(1,)]


class _Result:
    id = "1"
