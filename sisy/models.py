"""Sisy's ``sisy.models``, served by sisy-pg: every public name of Sisy 1.0b3's module."""

from sisy_pg.models import (
    Task,
    TaskRun,
    func_from_string,
    funcinfo_from_string,
    get_func_info,
    get_member,
    get_module_member_by_dottedpath,
    task_with_callable,
    taskinfo_with_label,
)

__all__ = [
    "Task",
    "TaskRun",
    "func_from_string",
    "funcinfo_from_string",
    "get_func_info",
    "get_member",
    "get_module_member_by_dottedpath",
    "task_with_callable",
    "taskinfo_with_label",
]
