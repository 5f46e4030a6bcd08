"""Django tasks (``@task``) on sisy_pg.django_tasks.ProcrastinateBackend, for its tests.

The framework's signals, as the worker sends them for these tasks, are
recorded as Hit rows (name ``"<signal>:<status>"``, run_id the result's id,
row_pk how many errors the result holds), so that a test can count them.
"""

import asyncio

from django.db import transaction
from django.utils import timezone

from sisy_pg import tasks_framework

from .models import Hit

task = tasks_framework.framework().task


class Boom(Exception):
    """What the failing tasks raise."""


def _hit(name: str, result_id: int = 0, note: str = "") -> None:
    Hit.objects.create(
        name=name, task_id=0, run_id=result_id, scheduled_for=timezone.now(), row_pk=note
    )


@task(queue_name="default")
def add(a: int, b: int = 0) -> int:
    return a + b


@task
def mark(name: str) -> str:
    """Leaves a Hit named ``name``: proof that it ran."""
    _hit(name)
    return name


@task
def fail(name: str) -> None:
    raise Boom(f"{name} fails on purpose")


@task(takes_context=True)
def fail_then_succeed(context, failures: int) -> int:
    """Fails its first ``failures`` attempts, then returns its attempt's number."""
    if context.attempt <= failures:
        raise Boom(f"attempt {context.attempt} fails on purpose")
    return int(context.attempt)


@task(takes_context=True)
def with_context(context, name: str) -> dict:
    return {"name": name, "attempt": context.attempt, "result_id": context.task_result.id}


@task
async def async_mark(name: str) -> str:
    """An async task: the async ORM, and a real await."""
    await asyncio.sleep(0)
    await Hit.objects.acreate(name=name, task_id=0, run_id=0, scheduled_for=timezone.now())
    return name.upper()


@task
def not_json() -> object:
    return object()


@task
def not_json_nan() -> float:
    return float("nan")


class Rollback(Exception):
    pass


@task
def enqueue_inside(name: str, rollback: bool) -> str:
    """Enqueues ``mark(name)`` inside transaction.atomic(), rolled back or not: its result's id."""
    try:
        with transaction.atomic():
            result_id = mark.enqueue(name).id
            if rollback:
                raise Rollback
    except Rollback:
        pass
    return result_id


def _record_signal(signal: str, task_result) -> None:
    if task_result.task.func.__module__ == __name__:
        _hit(f"{signal}:{task_result.status}", int(task_result.id), str(len(task_result.errors)))


def _started(sender, task_result, **kwargs):
    _record_signal("started", task_result)


def _finished(sender, task_result, **kwargs):
    _record_signal("finished", task_result)


tasks_framework.part("task_started").connect(_started, dispatch_uid=f"{__name__}.started")
tasks_framework.part("task_finished").connect(_finished, dispatch_uid=f"{__name__}.finished")
