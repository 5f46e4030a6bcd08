"""Helpers of the end-to-end tests: workers on the test database, every-second tasks."""

from __future__ import annotations

import atexit
import datetime as dt
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from devtools.workers import WORKER_COMMAND, WorkerProcess
from tests.helpers import current_database_url

# Worker logs of this session, deleted at exit (their text is in the failures it explains).
LOGS = Path(tempfile.mkdtemp(prefix="sisy-test-logs-"))
atexit.register(shutil.rmtree, LOGS, ignore_errors=True)


class Worker(WorkerProcess):
    """A worker of tests.settings on the test database, and what its output may say.

    The ``start_worker`` fixture fails a test whose workers logged a planner
    failure or a lost notification, unless the test expected it.
    """

    expect_planner_errors = False
    expect_notifications_lost = False  # behind a pooler in transaction mode

    def __init__(
        self,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        super().__init__(
            name,
            settings="tests.settings",
            database_url=current_database_url(),
            args=args,
            env=env,
            log_dir=LOGS,
            command=command,
        )


def instants_in(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The whole seconds in [start, end): the instants of an every-second task."""
    second = dt.timedelta(seconds=1)
    instant = start.replace(microsecond=0) + (second if start.microsecond else dt.timedelta())
    instants = []
    while instant < end:
        instants.append(instant)
        instant += second
    return instants


def every_second_tasks(count: int) -> list:
    """``count`` saved every-second tasks of tests.testapp.jobs.record, labelled "tick N"."""
    from sisy_pg.models import task_with_callable
    from tests.testapp import jobs

    tasks = [
        task_with_callable(jobs.record, label=f"tick {n}", schedule="* * * * * *")
        for n in range(count)
    ]
    for task in tasks:
        task.save()
    return tasks
