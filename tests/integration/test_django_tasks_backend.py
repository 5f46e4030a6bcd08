"""sisy_pg.django_tasks.ProcrastinateBackend: Django's task framework on procrastinate's jobs.

Real PostgreSQL; the tests marked e2e run the tasks with real
``manage.py procrastinate worker`` processes. The signals a worker sends for
the tasks of tests.testapp.backend_tasks are recorded there as Hit rows.
"""

import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from sisy_pg import tasks_framework
from sisy_pg.django_tasks import ProcrastinateBackend
from sisy_pg.django_tasks.job_args import TASK_NAME
from tests.integration.helpers import (
    DoesNotExist,
    Status,
    enqueue_rolled_back,
    job_row,
    stored_result,
    with_options,
)
from tests.testapp import backend_tasks

InvalidTask = tasks_framework.part("InvalidTask")


# --- The backend, without a worker ----------------------------------------------------------


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
