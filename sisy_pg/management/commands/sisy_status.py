"""``manage.py sisy_status``: every task, its state, schedule, next and last run.

Kept for the habit; the same table as ``manage.py sisy list``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from .sisy import all_tasks, list_lines


class Command(BaseCommand):
    help = "Show sisy tasks: state, schedule, time zone, next and last run (as 'sisy list')."

    def handle(self, *args: Any, **options: Any) -> None:
        for line in list_lines(all_tasks()):
            self.stdout.write(line)
