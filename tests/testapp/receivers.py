"""Receivers of sisy's signals, and callables, for the workers of tests/e2e/test_signals.py.

The test app imports this module when it is ready (tests/testapp/apps.py);
the receivers and the span exporter are set up then, and only in a process
whose environment names SISY_TEST_SIGNALS (the test's workers): other tests
that run runners in-process send signals nobody here should count. Each
receiver writes a Hit row, which the test reads.
"""

import os

from sisy_pg.models import TaskRun
from sisy_pg.signals import run_finished, run_not_run, run_started

from .models import Hit

# Where the worker writes its spans, one JSON object a line.
SPANS_FILE = os.environ.get("SISY_TEST_SIGNALS")


def succeed(message):
    pass


def fail(message):
    raise RuntimeError("fails on purpose")


def _hit(name, run, detail=""):
    Hit.objects.create(
        name=name,
        task_id=run.task_id,
        run_id=run.pk,
        scheduled_for=run.scheduled_for,
        row_pk=detail,
    )


def mail_admins(subject, message, run):
    """What django.core.mail.mail_admins does in the recipe: here a row the test counts."""
    _hit("mailed", run, subject)


def started(sender, run, task, **kwargs):
    assert run.task_id == task.pk and run.status == "running"
    _hit("run_started", run)


def finished(sender, run, task, status, **kwargs):
    _hit("run_finished", run, status)


def not_run(sender, run, task, reason, **kwargs):
    _hit("run_not_run", run, reason)


def explode(sender, run, **kwargs):
    raise ValueError("a receiver that raises")


# The recipe of docs/signals.md (but for the run passed to mail_admins).
FAILING = (TaskRun.Status.FAILED, TaskRun.Status.TIMED_OUT)
RAN = (TaskRun.Status.SUCCEEDED, *FAILING)


def mail_when_failing_twice(sender, run, task, status, **kwargs):
    """Mail the admins when a task fails twice in a row (once per streak)."""
    if status not in FAILING:
        return
    last_three = task.runs.filter(status__in=RAN, scheduled_for__lte=run.scheduled_for)
    failing = [
        s in FAILING
        for s in last_three.order_by("-scheduled_for").values_list("status", flat=True)[:3]
    ]
    if failing in ([True, True], [True, True, False]):
        mail_admins(f"{task.label} failed twice in a row", run.error, run)


def _export_spans(path):
    """Spans to ``path``, one JSON object a line (the SDK's console exporter)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = open(path, "a", buffering=1)  # noqa: SIM115 (the worker's life long)
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(
            ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
        )
    )
    trace.set_tracer_provider(provider)


if SPANS_FILE:
    run_started.connect(started)
    run_finished.connect(explode)  # first: the others are called all the same
    run_finished.connect(finished)
    run_finished.connect(mail_when_failing_twice)
    run_not_run.connect(not_run)
    _export_spans(SPANS_FILE)
