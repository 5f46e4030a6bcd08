"""Sisy's ``sisy.models``, served by sisy-pg."""

from sisy_pg.models import Task, TaskRun, task_with_callable, taskinfo_with_label

__all__ = ["Task", "TaskRun", "task_with_callable", "taskinfo_with_label"]
