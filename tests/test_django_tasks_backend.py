"""sisy_pg.django_tasks.ProcrastinateBackend: Django's task framework on procrastinate's jobs.

Real PostgreSQL; the tests marked e2e run the tasks with real
``manage.py procrastinate worker`` processes. The signals a worker sends for
the tasks of tests.testapp.backend_tasks are recorded there as Hit rows.
"""

import datetime as dt
import json
import sys

import procrastinate
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from procrastinate.contrib.django.django_connector import DjangoConnector

from sisy_pg import tasks_framework
from sisy_pg.django_tasks import ProcrastinateBackend
from sisy_pg.django_tasks.job_args import TASK_NAME, JobArgs
from tests.conftest import wait_until
from tests.testapp import backend_tasks
from tests.testapp.models import Hit

Status = tasks_framework.part("TaskResultStatus")
DoesNotExist = tasks_framework.part("TaskResultDoesNotExist")
InvalidTask = tasks_framework.part("InvalidTask")
InvalidTaskBackend = tasks_framework.part("InvalidTaskBackend")


def with_options(**options):
    """The default backend with these OPTIONS, in this process (jobs carry what they set)."""
    tasks = {**settings.TASKS, "default": {**settings.TASKS["default"], "OPTIONS": options}}
    return override_settings(TASKS=tasks)


def job_row(job_id):
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT queue_name, priority, scheduled_at, task_name, args, status::text, attempts
                 FROM procrastinate_jobs WHERE id = %s""",
            [int(job_id)],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    names = ("queue_name", "priority", "scheduled_at", "task_name", "args", "status", "attempts")
    job = dict(zip(names, row, strict=True))
    job["args"] = json.loads(job["args"]) if isinstance(job["args"], str) else job["args"]
    return job


def stored_result(job_id):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, errors FROM sisy_task_result WHERE job_id = %s", [int(job_id)]
        )
        row = cursor.fetchone()
    return (
        None
        if row is None
        else (row[0], row[1] if isinstance(row[1], list) else json.loads(row[1]))
    )


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


def enqueue_rolled_back(task, *args):
    """``task.enqueue(*args)`` in a transaction rolled back; its result, and whether its job was seen."""
    try:
        with transaction.atomic():
            result = task.enqueue(*args)
            seen = job_row(result.id) is not None
            raise backend_tasks.Rollback
    except backend_tasks.Rollback:
        pass
    return result, seen


# --- The backend, without a worker ----------------------------------------------------------


def test_what_the_backend_supports():
    backend = tasks_framework.part("task_backends")["default"]
    assert isinstance(backend, ProcrastinateBackend)
    assert backend.supports_defer and backend.supports_priority
    assert backend.supports_async_task and backend.supports_get_result
    assert (backend.retries, backend.retry_delay) == (0, 0.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"RETRYS": 2}, "unknown option"),
        ({"RETRIES": -1}, "RETRIES"),
        ({"RETRIES": True}, "RETRIES"),
        ({"RETRY_DELAY": float("inf")}, "RETRY_DELAY"),
        ({"RETRY_DELAY": "10"}, "RETRY_DELAY"),
    ],
)
def test_options_are_checked(options, message):
    with pytest.raises(InvalidTaskBackend, match=message):
        ProcrastinateBackend("checked", {"OPTIONS": options})


@pytest.mark.django_db
def test_enqueue_maps_priority_queue_and_run_after_onto_the_job():
    run_after = timezone.now() + dt.timedelta(hours=1)
    result = backend_tasks.add.using(priority=7, queue_name="mail", run_after=run_after).enqueue(
        2, b=3
    )
    assert result.status == Status.READY and result.backend == "default"
    assert (result.args, result.kwargs) == ([2], {"b": 3})
    job = job_row(result.id)
    assert job["task_name"] == TASK_NAME and job["status"] == "todo"
    assert (job["queue_name"], job["priority"], job["scheduled_at"]) == ("mail", 7, run_after)
    assert job["args"]["task_path"] == "tests.testapp.backend_tasks.add"
    assert (job["args"]["args"], job["args"]["kwargs"]) == ([2], {"b": 3})
    # get_result() reads it back, as enqueued.
    again = backend_tasks.add.get_result(result.id)
    assert again.status == Status.READY and again.enqueued_at == result.enqueued_at
    assert (again.task.queue_name, again.task.priority, again.task.run_after) == (
        "mail",
        7,
        run_after,
    )
    assert (again.args, again.kwargs, again.errors, again.worker_ids) == ([2], {"b": 3}, [], [])


@pytest.mark.django_db
def test_a_job_carries_the_retries_of_its_backend():
    with with_options(RETRIES=3, RETRY_DELAY=1.5):
        result = backend_tasks.add.enqueue(1)
    args = job_row(result.id)["args"]
    assert (args["retries"], args["retry_delay"]) == (3, 1.5)


@pytest.mark.django_db(transaction=True)
def test_an_enqueue_rolled_back_with_its_transaction_leaves_no_job():
    result, seen = enqueue_rolled_back(backend_tasks.add, 1)
    assert seen  # inside the transaction
    assert job_row(result.id) is None and stored_result(result.id) is None
    with pytest.raises(DoesNotExist):
        backend_tasks.add.get_result(result.id)


@pytest.mark.django_db
def test_a_result_lives_as_long_as_its_job():
    result = backend_tasks.add.enqueue(1)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs WHERE id = %s", [int(result.id)])
    assert stored_result(result.id) is None
    with pytest.raises(DoesNotExist):
        backend_tasks.add.get_result(result.id)


@pytest.mark.django_db
def test_a_result_whose_job_can_no_longer_run_is_failed():
    result = backend_tasks.add.enqueue(1)
    with connection.cursor() as cursor:  # cancelled, as procrastinate's admin does
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'cancelled' WHERE id = %s", [int(result.id)]
        )
    assert stored_result(result.id)[0] == "READY"
    assert backend_tasks.add.get_result(result.id).status == Status.FAILED


@pytest.mark.django_db
def test_enqueue_sends_task_enqueued():
    sent = []

    def receiver(sender, task_result, **kwargs):
        sent.append((sender, task_result.id))

    signal = tasks_framework.part("task_enqueued")
    signal.connect(receiver)
    try:
        result = backend_tasks.add.enqueue(1)
    finally:
        signal.disconnect(receiver)
    assert sent == [(ProcrastinateBackend, result.id)]


@pytest.mark.django_db
@pytest.mark.parametrize("result_id", ["12345678", "x", "", "-1", "1e3", str(2**70), None])
def test_get_result_of_an_unknown_id_raises_task_result_does_not_exist(result_id):
    with pytest.raises(DoesNotExist):
        tasks_framework.part("task_backends")["default"].get_result(result_id)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([float("nan")], {}, "not a JSON number"),
        ([], {"b": {1: 2}}, "key 1 is not a string"),
        (["a\x00b"], {}, "NUL"),
        ([object()], {}, "not JSON"),
    ],
)
def test_arguments_that_are_not_json_are_refused_at_enqueue(args, kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        backend_tasks.add.enqueue(*args, **kwargs)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_jobs")
        assert cursor.fetchone() == (0,)


@pytest.mark.django_db
def test_a_task_outside_the_allowed_callables_is_refused_at_enqueue():
    with (
        override_settings(SISY_ALLOWED_CALLABLES=["tests.testapp.jobs"]),
        pytest.raises(InvalidTask, match=r"^refused: 'tests\.testapp\.backend_tasks\.add'"),
    ):
        backend_tasks.add.enqueue(1)


@pytest.mark.django_db(transaction=True)
def test_aenqueue_and_aget_result():
    result = async_to_sync(backend_tasks.add.aenqueue)(1, 2)
    again = async_to_sync(backend_tasks.add.aget_result)(result.id)
    assert again.id == result.id and again.status == Status.READY and again.args == [1, 2]


# --- With real workers -------------------------------------------------------------------------


@pytest.mark.e2e
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


@pytest.mark.e2e
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
