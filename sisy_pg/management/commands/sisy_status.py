"""``manage.py sisy_status``: every task, its schedule, next run and last outcome."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand

from sisy_pg.models import Task


def _when(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value else "-"


class Command(BaseCommand):
    help = "Show sisy tasks: schedule, time zone, next run, last outcome."

    def handle(self, *args: Any, **options: Any) -> None:
        tasks = Task.objects.with_status().order_by("next_run", "label")
        if not tasks:
            self.stdout.write("No sisy task defined.")
            return
        header = f"{'id':>5}  {'label':<36} {'schedule':<16} {'timezone':<16} {'state':<9} {'next run':<29} {'last':<10}"
        self.stdout.write(header)
        for task in tasks:
            state = task.state
            self.stdout.write(
                f"{task.pk:>5}  {task.label[:36]:<36} {task.schedule:<16} {task.timezone:<16} "
                f"{state:<9} {_when(task.next_run):<29} {task.last_outcome or '-':<10}"
            )
            if task.error:
                self.stdout.write(f"       ! {task.error}")
