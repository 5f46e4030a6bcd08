"""procrastinate tasks for the yardsticks, and no-ops for sisy-pg tasks: a callable, a Django task."""

import os
from typing import Any

from procrastinate.contrib.django import app

from sisy_pg import tasks_framework


def noop(message: dict[str, Any]) -> None:
    """The sisy-pg task of the benchmark: nothing, so that lag is all that is measured."""


# The framework is found at run time (django.tasks or its backport): untyped here.
@tasks_framework.framework().task  # type: ignore[untyped-decorator]
def django_noop() -> None:
    """The enqueue scenario's Django task (TASKS' default: sisy-pg's ProcrastinateBackend):
    nothing, so that the path from the instant to the task's start is all that is measured."""


@app.task(name="bench.noop")
def plain_noop() -> None:
    """The burst's yardstick: a sync no-op procrastinate task, as a Django user writes it."""


@app.task(name="bench.periodic")
def periodic_job(timestamp: int) -> None:
    """procrastinate's own periodic task, every second (BENCH_PERIODIC schedules of it)."""


for number in range(int(os.environ.get("BENCH_PERIODIC", "0"))):
    app.periodic(cron="* * * * * *", periodic_id=f"bench-{number}")(periodic_job)
