"""A backend of Django's task framework on procrastinate: :class:`ProcrastinateBackend`.

``install(app)`` registers on procrastinate's App the task its workers run
the jobs with (sisy_pg's AppConfig calls it where the framework is installed).
"""

from __future__ import annotations

from .backend import ProcrastinateBackend
from .execution import install

__all__ = ["ProcrastinateBackend", "install"]
