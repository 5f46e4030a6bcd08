"""``manage.py sisy_watch``: a line per run as it ends (task, instant, lag, outcome).

Listens to the ``sisy_run_changed`` channel that the trigger on sisy_taskrun
notifies; it does not poll.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from django.core.management.base import BaseCommand, CommandParser

from sisy_pg.models import TaskRun
from sisy_pg.store import default_store

CHANNEL = "sisy_run_changed"


def format_run(run: TaskRun) -> str:
    lag = f"{run.lag.total_seconds() * 1000:7.1f} ms" if run.lag is not None else "      -   "
    line = (
        f"{run.scheduled_for.isoformat(timespec='milliseconds')}  "
        f"{run.task.label[:40]:<40}  lag {lag}  {run.status}"
    )
    if run.error:
        line += f"  ({run.error.splitlines()[0][:100]})"
    return line


class Command(BaseCommand):
    help = "Print a line for every run that ends (scheduled instant, task, lag, outcome)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--seconds", type=float, default=None, help="Stop after this many seconds."
        )

    def handle(self, *args: Any, seconds: float | None = None, **options: Any) -> None:
        deadline = None if seconds is None else time.monotonic() + seconds
        self.stdout.write(f"{'scheduled for':<29}  {'task':<40}  {'lag':<14}  outcome")
        with psycopg.connect(**default_store().connection_params(), autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            try:
                while deadline is None or time.monotonic() < deadline:
                    timeout = (
                        1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                    )
                    for notification in conn.notifies(timeout=timeout):
                        event = json.loads(notification.payload)
                        if event["status"] in TaskRun.FINAL_STATUSES:
                            run = (
                                TaskRun.objects.select_related("task")
                                .filter(pk=event["run_id"])
                                .first()
                            )
                            if run is not None:
                                self.stdout.write(format_run(run))
                                self.stdout.flush()
            except KeyboardInterrupt:
                pass
