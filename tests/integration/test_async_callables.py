"""``async def`` callables: described like the others, awaited by the worker in their slot.

They run on an event loop of their own while their callable thread waits
(sisy_pg.runner._await_on_a_loop_of_its_own), so one that blocks stalls
neither the worker's event loop nor the other runs.
"""

import threading

import pytest
from django.utils import timezone

from sisy_pg import callables, runner
from tests.integration.helpers import one_off
from tests.testapp import async_jobs
from tests.testapp.models import AsyncWidget, Hit


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("the_callable", "func_type"),
    [
        (async_jobs.record, "function"),
        (async_jobs.AsyncThings.class_job, "classmethod"),
        (async_jobs.AsyncThings.static_job, "staticmethod"),
        (async_jobs.returns_a_coroutine, "function"),
    ],
)
def test_async_callables_are_described_as_their_sync_kin(the_callable, func_type):
    info = callables.describe(the_callable)
    assert info["func_type"] == func_type
    assert callables.resolve(info) == the_callable


@pytest.mark.django_db
def test_an_async_model_instance_method_is_bound_to_its_row():
    row = AsyncWidget.objects.create()
    info = callables.describe(row.touch)
    assert info["func_type"] == "instancemethod" and info["model_pk"] == row.pk
    assert callables.resolve(info).__func__ is AsyncWidget.touch


@pytest.mark.django_db
def test_an_async_generator_is_refused():
    with pytest.raises(callables.CallableError, match="is a generator function"):
        callables.describe(async_jobs.async_generator)


@pytest.mark.django_db(transaction=True)
def test_the_async_orm_of_a_callable_queries_from_its_callable_thread():
    """So the runner's connection hygiene (closed as around a request) covers its queries."""
    task = one_off(async_jobs.orm_thread, "orm thread")
    message = {
        "task": task,
        "message": {"run_id": 1, "scheduled_for": timezone.now()},
    }
    outcome = runner._call(task.callable_info, message, "default")
    assert outcome.status == "succeeded", outcome.traceback
    assert Hit.objects.get(name="orm_thread").row_pk == str(threading.get_ident())


# --- With a real worker -------------------------------------------------------------
