"""django.tasks' ProcrastinateBackend without a database: what it supports, its options checked."""

import pytest

from sisy_pg import tasks_framework
from sisy_pg.django_tasks import ProcrastinateBackend

InvalidTaskBackend = tasks_framework.part("InvalidTaskBackend")


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
