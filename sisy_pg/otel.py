"""OpenTelemetry spans: one per run, one per planner step that did something.

Only when ``opentelemetry-api`` can be imported (the extra ``sisy-pg[otel]``).
The import is tried once, here; without it every helper returns at once and
the runner and planner pay a function call. The spans go to the tracer
provider the project sets up (``opentelemetry-sdk`` and an exporter,
``opentelemetry-instrument``...); with none, the API's spans record nothing.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
except ImportError:  # the extra is not installed: no spans, no cost
    trace = None  # type: ignore[assignment]

from . import __version__
from .vocabulary import RunStatus

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .models import Task
    from .store import StartedRun

#: Whether spans are made (opentelemetry-api is importable).
ENABLED = trace is not None

# The outcomes a run's span reports as an error.
_FAILED = (RunStatus.FAILED, RunStatus.TIMED_OUT, "broken")

_tracer: Any = trace.get_tracer("sisy_pg", __version__) if trace is not None else None
_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


def run_span(task: Task, started: StartedRun, worker: str) -> AbstractContextManager[Any]:
    """The span of one run, current while its callable runs and its outcome is recorded.

    The callable's thread inherits it (the runner copies the context), so
    spans the callable makes (an instrumented HTTP client, the ORM...) are
    its children.
    """
    if _tracer is None:
        return _NO_SPAN
    assert started.scheduled_for is not None and started.started_at is not None
    return _tracer.start_as_current_span(  # type: ignore[no-any-return]
        "sisy.run",
        attributes={
            "sisy.task.id": task.pk,
            "sisy.task.label": task.label,
            "sisy.run.id": started.run_id,
            "sisy.run.scheduled_for": started.scheduled_for.isoformat(),
            "sisy.run.attempt": started.attempt or 1,
            "sisy.run.lag_seconds": (started.started_at - started.scheduled_for).total_seconds(),
            "sisy.worker": worker,
        },
    )


def callable_raised(exception: BaseException | None) -> None:
    """Note the callable's exception on the current run's span."""
    if trace is not None and exception is not None:
        trace.get_current_span().record_exception(exception)


def run_ended(span: Any, outcome: str) -> None:
    """Note the run's outcome on its span: failed, timed out and broken are errors."""
    if span is None:
        return
    span.set_attribute("sisy.run.outcome", outcome)
    if outcome in _FAILED:
        span.set_status(trace.StatusCode.ERROR, outcome)


def now() -> int:
    """When a planner step begins (nanoseconds), for :func:`planner_step`."""
    return time.time_ns() if _tracer is not None else 0


def planner_step(step: str, began: int, **counts: int) -> None:
    """A span for a planner step begun at ``began`` that did something (``counts``).

    Made afterwards, so that the steps that found nothing to do (most
    ticks) make no span.
    """
    if _tracer is not None:
        _tracer.start_span(
            f"sisy.planner.{step}",
            start_time=began,
            attributes={f"sisy.{name}": count for name, count in counts.items()},
        ).end()
