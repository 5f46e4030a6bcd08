"""sisy_pg.otel: what a run's and a planner step's spans carry, and nothing without OpenTelemetry.

No database: the spans are collected in memory. The spans of a real worker
are checked by tests/e2e/test_signals.py.
"""

import datetime as dt
import importlib
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sisy_pg import otel
from sisy_pg.models import Task
from sisy_pg.store import StartedRun

INSTANT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def started(run_id=11, attempt=2):
    task = Task(pk=5, label="Nightly report")
    started_at = INSTANT + dt.timedelta(milliseconds=3)
    return StartedRun(run_id, "running", INSTANT, attempt, started_at, None, task)


@pytest.fixture
def exported(monkeypatch):
    """The spans sisy_pg.otel makes, in memory (the process-wide provider left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(otel, "_tracer", provider.get_tracer("sisy_pg"))
    return exporter


def test_a_run_and_a_planner_step_make_spans(exported):
    run = started()
    with otel.run_span(run.task, run, "host:1:w1") as span:
        otel.callable_raised(RuntimeError("boom"))
        otel.run_ended(span, "failed")
    with otel.run_span(run.task, started(run_id=12), "host:1:w1") as span:
        otel.callable_raised(None)
        otel.run_ended(span, "succeeded")
    began = otel.now()
    otel.planner_step("claim", began, tasks=3, runs_queued=2, not_run=1)

    failed, succeeded, claim = exported.get_finished_spans()
    assert failed.name == "sisy.run"
    assert dict(failed.attributes) == {
        "sisy.task.id": 5,
        "sisy.task.label": "Nightly report",
        "sisy.run.id": 11,
        "sisy.run.scheduled_for": INSTANT.isoformat(),
        "sisy.run.attempt": 2,
        "sisy.run.lag_seconds": 0.003,
        "sisy.worker": "host:1:w1",
        "sisy.run.outcome": "failed",
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.attributes["exception.type"] for event in failed.events] == ["RuntimeError"]
    assert succeeded.status.status_code is StatusCode.UNSET and not succeeded.events
    assert claim.name == "sisy.planner.claim" and claim.start_time == began
    assert dict(claim.attributes) == {"sisy.tasks": 3, "sisy.runs_queued": 2, "sisy.not_run": 1}


def test_without_opentelemetry_nothing_is_made(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    try:
        importlib.reload(otel)
        assert not otel.ENABLED and otel._tracer is None
        run = started()
        with otel.run_span(run.task, run, "w") as span:
            assert span is None
            otel.callable_raised(RuntimeError("boom"))
            otel.run_ended(span, "failed")
        assert otel.now() == 0
        otel.planner_step("claim", 0, tasks=1)
    finally:
        monkeypatch.undo()
        importlib.reload(otel)
    assert otel.ENABLED
