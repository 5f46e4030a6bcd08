"""A django.tasks task as a recurring task's target: how it is described, and what is refused."""

import pytest
from django.test import override_settings
from django.utils import timezone

from sisy_pg import callables
from sisy_pg.models import task_with_callable
from tests.testapp import scheduled_tasks

PATH = "tests.testapp.scheduled_tasks.add"


def test_a_task_object_and_its_dotted_path_are_described_alike():
    by_object = callables.describe(scheduled_tasks.add)
    by_path = callables.describe(PATH)
    assert by_object == by_path
    assert by_object["func_type"] == "django_task"
    assert by_object["func_path"] == PATH
    assert "using" not in by_object


def test_using_is_stored_as_what_it_changes():
    info = callables.describe(scheduled_tasks.add.using(queue_name="mail", priority=5))
    assert info["using"] == {"queue_name": "mail", "priority": 5}
    # The same from a row written by hand, as the worker reads it.
    assert callables.validate_info(info) == info


def test_a_task_whose_name_does_not_import_back_is_refused():
    with pytest.raises(ValueError, match="not an object of that name"):
        callables.describe("tests.testapp.scheduled_tasks.renamed")


def test_a_task_defined_on_a_class_is_refused():
    with pytest.raises(ValueError, match="defined on a class"):
        callables.describe("tests.testapp.scheduled_tasks.Holder.on_class")
    with pytest.raises(ValueError, match="defined on a class"):
        callables.describe(scheduled_tasks.Holder.on_class)


def test_a_queue_the_backend_refuses_is_refused(settings):
    settings.TASKS = {
        **settings.TASKS,
        "default": {**settings.TASKS["default"], "QUEUES": ["default", "mail"]},
    }
    callables.describe(scheduled_tasks.add.using(queue_name="mail"))
    info = {**callables.describe(PATH), "using": {"queue_name": "sms"}}
    with pytest.raises(ValueError, match="sms"):
        callables.validate_info(info)


def test_a_backend_outside_sisy_s_database_needs_an_opt_in():
    dummy = scheduled_tasks.add.using(backend="dummy")
    with pytest.raises(ValueError, match="SISY_AT_MOST_ONCE_BACKENDS"):
        callables.describe(dummy)
    with override_settings(SISY_AT_MOST_ONCE_BACKENDS=["dummy"]):
        assert callables.describe(dummy)["using"] == {"backend": "dummy"}


def test_run_after_is_refused():
    import datetime as dt

    later = scheduled_tasks.add.using(run_after=timezone.now() + dt.timedelta(hours=1))
    with pytest.raises(ValueError, match="run_after"):
        callables.describe(later)


def test_a_path_a_plain_callable_was_stored_under_is_refused_for_a_task():
    info = {**callables.describe(PATH), "func_type": "function"}
    with pytest.raises(ValueError, match="func_type"):
        callables.validate_info(info)


def test_a_failed_enqueue_outside_sisy_s_database_is_not_retried(settings):
    from sisy_pg import task_targets

    settings.TASKS = {
        **settings.TASKS,
        "away": {"BACKEND": "tests.testapp.task_backends.BrokerAwayBackend"},
    }
    settings.SISY_AT_MOST_ONCE_BACKENDS = ["away"]
    task = task_with_callable(scheduled_tasks.add.using(backend="away"), userdata={"a": 1})
    enqueue = callables.resolve(task.callable_info, userdata=task.userdata)
    message = {"message": {"run_id": 1, "scheduled_for": timezone.now()}}
    with pytest.raises(task_targets.EnqueueUncertain, match=r"broker is away.*not retried"):
        enqueue(message)
