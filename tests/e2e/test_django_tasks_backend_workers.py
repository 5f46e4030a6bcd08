"""django.tasks' ProcrastinateBackend with a real worker: results say how tasks ran, failed, were retried or refused."""

import datetime as dt
import sys

import procrastinate
import pytest
from django.db import connection, transaction
from django.utils import timezone
from procrastinate.contrib.django.django_connector import DjangoConnector

from sisy_pg import tasks_framework
from sisy_pg.django_tasks.job_args import TASK_NAME, JobArgs
from tests.helpers import wait_until
from tests.integration.helpers import (
    DoesNotExist,
    Status,
    enqueue_rolled_back,
    job_row,
    stored_result,
    with_options,
)
from tests.testapp import backend_tasks
from tests.testapp.models import Hit


def signals(result_id):
    """The signals the worker sent for a result, in order: (signal:status, errors held)."""
    hits = Hit.objects.filter(run_id=int(result_id), name__contains=":").order_by("id")
    return [(hit.name, int(hit.row_pk)) for hit in hits]


def finished(result, timeout=30):
    """The result once its job ended (then its signals have been sent), read again."""
    wait_until(lambda: job_row(result.id)["status"] in ("succeeded", "failed"), timeout=timeout)
    return result.task.get_backend().get_result(result.id)


def defer_raw(task_path, backend="default", retries=0):
    """A job of the backend's task deferred as another writer would: what it names unchecked."""
    job_args = JobArgs(task_path=task_path, backend=backend, args=[], kwargs={}, retries=retries)
    app = procrastinate.App(connector=DjangoConnector(alias="default"))
    return app.configure_task(TASK_NAME, task_kwargs=job_args.as_json()).defer()


def test_enqueued_tasks_run_on_a_worker_and_their_results_say_how(start_worker):
    worker = start_worker("w1")
    with connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(id::text) FROM procrastinate_workers")
        ((worker_ids,),) = cursor.fetchall()
    run_after = timezone.now() + dt.timedelta(seconds=1)
    later = backend_tasks.mark.using(run_after=run_after).enqueue("later")
    added = backend_tasks.add.enqueue(2, b=3)
    asynchronous = backend_tasks.async_mark.enqueue("async")
    with_context = backend_tasks.with_context.using(queue_name="mail", priority=-5).enqueue("c")
    committed = backend_tasks.enqueue_inside.enqueue("inner committed", rollback=False)
    rolled_back = backend_tasks.enqueue_inside.enqueue("inner rolled back", rollback=True)
    # A job whose task already succeeded (run again after its worker died) does not run it.
    with transaction.atomic(), connection.cursor() as cursor:
        already = backend_tasks.mark.enqueue("already succeeded")
        cursor.execute(
            "UPDATE sisy_task_result SET status = 'SUCCESSFUL' WHERE job_id = %s", [int(already.id)]
        )

    added = finished(added)
    assert added.status == Status.SUCCESSFUL and added.return_value == 5
    assert added.enqueued_at <= added.started_at <= added.last_attempted_at <= added.finished_at
    assert added.errors == [] and len(added.worker_ids) == 1
    assert added.worker_ids[0] in worker_ids
    # task_started, then task_finished once, with the final outcome.
    assert signals(added.id) == [("started:RUNNING", 0), ("finished:SUCCESSFUL", 0)]
    assert job_row(added.id)["status"] == "succeeded"

    asynchronous = finished(asynchronous)
    assert asynchronous.status == Status.SUCCESSFUL and asynchronous.return_value == "ASYNC"
    assert Hit.objects.filter(name="async").count() == 1

    with_context = finished(with_context)
    assert with_context.status == Status.SUCCESSFUL
    assert with_context.return_value == {"name": "c", "attempt": 1, "result_id": with_context.id}
    assert (with_context.task.queue_name, with_context.task.priority) == ("mail", -5)

    later = finished(later)
    assert later.status == Status.SUCCESSFUL and later.started_at >= run_after

    # In a worker's thread too, an enqueue is part of the transaction around it.
    committed, rolled_back = finished(committed), finished(rolled_back)
    inner = finished(backend_tasks.mark.get_result(committed.return_value))
    assert inner.status == Status.SUCCESSFUL and inner.return_value == "inner committed"
    with pytest.raises(DoesNotExist):
        backend_tasks.mark.get_result(rolled_back.return_value)
    assert job_row(rolled_back.return_value) is None

    # Rolled back in this process: never runs.
    never, _ = enqueue_rolled_back(backend_tasks.mark, "never")
    after = finished(backend_tasks.mark.enqueue("after"))
    assert after.status == Status.SUCCESSFUL
    assert job_row(never.id) is None
    assert not Hit.objects.filter(name="never").exists()
    assert Hit.objects.filter(name="later").count() == 1

    already = finished(already)
    assert already.status == Status.SUCCESSFUL and already.worker_ids == []
    assert not Hit.objects.filter(name="already succeeded").exists()
    assert signals(already.id) == []
    assert f"Job {already.id}: its Django task" in worker.output()


def test_failures_retries_and_refusals(start_worker, tmp_path):
    marker = tmp_path / "imported"
    worker = start_worker("w1", env={"SISY_FORBIDDEN_IMPORT_MARKER": str(marker)})
    with with_options(RETRIES=2):
        flaky = backend_tasks.fail_then_succeed.enqueue(failures=2)
        not_json = backend_tasks.not_json.enqueue()
        not_json_nan = backend_tasks.not_json_nan.enqueue()
    with with_options(RETRIES=1):
        failing = backend_tasks.fail.enqueue("x")
    outside = defer_raw("tests.forbidden_jobs.job", retries=2)
    not_a_task = defer_raw("tests.testapp.jobs.record", retries=2)
    other_backend = defer_raw("tests.testapp.backend_tasks.add", backend="immediate")

    # Two failed attempts retried by procrastinate, then a success.
    flaky = finished(flaky)
    assert flaky.status == Status.SUCCESSFUL and flaky.return_value == 3
    assert len(flaky.worker_ids) == 3 and job_row(flaky.id)["attempts"] == 3
    assert [e.exception_class_path for e in flaky.errors] == [
        "tests.testapp.backend_tasks.Boom"
    ] * 2
    assert "attempt 2 fails on purpose" in flaky.errors[1].traceback
    assert signals(flaky.id) == [
        ("started:RUNNING", 0),
        ("started:RUNNING", 1),
        ("started:RUNNING", 2),
        ("finished:SUCCESSFUL", 2),
    ]

    # Failing past its retries: FAILED, each attempt's error kept; task_finished once.
    failing = finished(failing)
    assert failing.status == Status.FAILED and failing.finished_at is not None
    assert len(failing.errors) == 2 and len(failing.worker_ids) == 2
    assert failing.errors[-1].exception_class_path == "tests.testapp.backend_tasks.Boom"
    assert "Boom: x fails on purpose" in failing.errors[-1].traceback
    assert signals(failing.id) == [
        ("started:RUNNING", 0),
        ("started:RUNNING", 1),
        ("finished:FAILED", 2),
    ]
    assert job_row(failing.id)["status"] == "failed"
    with pytest.raises(ValueError, match="failed"):
        failing.return_value  # noqa: B018

    # A return value that is not JSON fails the task, without a retry (it ran).
    for result in (finished(not_json), finished(not_json_nan)):
        assert result.status == Status.FAILED and len(result.worker_ids) == 1
        assert result.errors[0].exception_class_path == (
            "sisy_pg.django_tasks.errors.ReturnValueNotJSON"
        )
        assert "returned a value" in result.errors[0].traceback
        assert signals(result.id) == [("started:RUNNING", 0), ("finished:FAILED", 1)]

    # Refused before anything is imported or run; not retried; no signal.
    for job_id, reason in (
        (outside, "refused: 'tests.forbidden_jobs.job' is not under a module prefix"),
        (not_a_task, "'tests.testapp.jobs.record' is not a Django task"),
        (other_backend, "not a ProcrastinateBackend"),
    ):
        wait_until(lambda job_id=job_id: job_row(job_id)["status"] == "failed", timeout=30)
        status, errors = stored_result(job_id)
        assert status == "FAILED" and job_row(job_id)["attempts"] == 1
        assert [e["exception_class_path"] for e in errors] == [
            "sisy_pg.django_tasks.errors.JobRefused"
        ]
        assert reason in errors[0]["traceback"]
        assert f"Job {job_id} refused, its Django task not run: " in worker.output()
        with pytest.raises(DoesNotExist, match="cannot be rebuilt"):
            tasks_framework.part("task_backends")["default"].get_result(str(job_id))
        assert signals(job_id) == []
    assert not marker.exists()
    assert "tests.forbidden_jobs" not in sys.modules
