"""Django's task framework, wherever it comes from: ``django.tasks`` or the ``django_tasks`` backport.

Django 6.0 ships ``django.tasks`` (DEP 14); on Django 4.2 and 5.2 the
``django-tasks`` package provides the same API as ``django_tasks``. Both may be
installed; ``django.tasks`` wins, as it does for django-tasks-db. Every other
module of sisy-pg reaches the framework through this one, so the choice is
made once.

:func:`is_task` needs neither: it recognises a Task of whichever framework is
already imported, without importing one (a project without the framework can
still schedule plain callables).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

_FRAMEWORKS = ("django.tasks", "django_tasks")


class FrameworkMissing(ImportError):
    """Neither ``django.tasks`` (Django 6+) nor the ``django_tasks`` backport can be imported."""


def _framework() -> ModuleType:
    for name in _FRAMEWORKS:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise FrameworkMissing(
        "Django's task framework is not available: it is django.tasks on Django 6.0 and later; "
        "on Django 4.2 and 5.2 install its backport, `pip install django-tasks`"
    )


def framework() -> ModuleType:
    """The framework's top module (``django.tasks`` or ``django_tasks``), or FrameworkMissing."""
    return _framework()


def available() -> bool:
    try:
        _framework()
    except FrameworkMissing:
        return False
    return True


def is_task(obj: Any) -> bool:
    """Whether ``obj`` is a Task of a task framework already imported (nothing is imported)."""
    for name in _FRAMEWORKS:
        module = sys.modules.get(f"{name}.base")
        if module is not None and isinstance(obj, module.Task):
            return True
    return False


def part(name: str) -> Any:
    """An object of the framework by its name in ``django.tasks``; the backport's where it differs.

    The names sisy-pg uses: ``Task``, ``TaskResult``, ``TaskResultStatus``,
    ``TaskContext``, ``TaskError``, ``task_backends``, ``BaseTaskBackend``,
    ``InvalidTask``, ``InvalidTaskBackend``, ``TaskResultDoesNotExist``,
    ``task_enqueued``, ``task_started``, ``task_finished``, ``normalize_json``,
    ``DEFAULT_TASK_BACKEND_ALIAS``, ``DEFAULT_TASK_QUEUE_NAME``,
    ``DEFAULT_TASK_PRIORITY``, ``TASK_MIN_PRIORITY``, ``TASK_MAX_PRIORITY``.
    """
    top = _framework()
    backport = top.__name__ == "django_tasks"
    module_name, attribute = _WHERE[name]
    if backport:
        attribute = _BACKPORT_NAMES.get(name, attribute)
        if module_name == "django.utils.json":
            module_name = "utils"
    if module_name == "django.utils.json":
        return getattr(importlib.import_module(module_name), attribute)
    module = importlib.import_module(
        f"{top.__name__}.{module_name}" if module_name else top.__name__
    )
    return getattr(module, attribute)


# Where each name lives in django.tasks ("" is the top module).
_WHERE: dict[str, tuple[str, str]] = {
    "Task": ("base", "Task"),
    "TaskResult": ("base", "TaskResult"),
    "TaskResultStatus": ("base", "TaskResultStatus"),
    "TaskContext": ("base", "TaskContext"),
    "TaskError": ("base", "TaskError"),
    "DEFAULT_TASK_BACKEND_ALIAS": ("base", "DEFAULT_TASK_BACKEND_ALIAS"),
    "DEFAULT_TASK_QUEUE_NAME": ("base", "DEFAULT_TASK_QUEUE_NAME"),
    "DEFAULT_TASK_PRIORITY": ("base", "DEFAULT_TASK_PRIORITY"),
    "TASK_MIN_PRIORITY": ("base", "TASK_MIN_PRIORITY"),
    "TASK_MAX_PRIORITY": ("base", "TASK_MAX_PRIORITY"),
    "task_backends": ("", "task_backends"),
    "BaseTaskBackend": ("backends.base", "BaseTaskBackend"),
    "InvalidTask": ("exceptions", "InvalidTask"),
    "InvalidTaskBackend": ("exceptions", "InvalidTaskBackend"),
    "TaskResultDoesNotExist": ("exceptions", "TaskResultDoesNotExist"),
    "task_enqueued": ("signals", "task_enqueued"),
    "task_started": ("signals", "task_started"),
    "task_finished": ("signals", "task_finished"),
    "normalize_json": ("django.utils.json", "normalize_json"),
}
# The backport's names, where they differ from Django's.
_BACKPORT_NAMES = {
    "InvalidTask": "InvalidTaskError",
    "InvalidTaskBackend": "InvalidTaskBackendError",
}
