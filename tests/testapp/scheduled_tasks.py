"""Django tasks (``@task``) that schedules enqueue in the tests. Each records its run as a Hit."""

import datetime as dt

from sisy_pg import tasks_framework

from .models import Hit

task = tasks_framework.framework().task


@task
def record_instant(name: str, scheduled_for: str, run_id: int) -> str:
    """Declares sisy's two parameters: the instant its run is for, and the run's id."""
    Hit.objects.create(
        name=name, task_id=0, run_id=run_id, scheduled_for=dt.datetime.fromisoformat(scheduled_for)
    )
    return scheduled_for


@task
def add(a: int, b: int = 0) -> int:
    return a + b


@task
def fail(name: str) -> None:
    raise RuntimeError(f"{name} fails on purpose")


@task(takes_context=True)
def with_context(context, name: str) -> int:
    return int(context.attempt)


@task(backend="immediate")
def immediate_add(a: int, b: int = 0) -> int:
    return a + b


# The module-level name is not the function's: the path does not import back to it.
renamed = add


class Holder:
    @task
    def on_class(self) -> None:  # a Django task defined on a class
        pass


def plain(message):
    """A sisy callable, not a Django task."""
