"""End to end: a real worker sends run_started, run_finished and run_not_run, and traces its runs.

The worker's receivers (tests/testapp/receivers.py, connected when it first
runs one of that module's callables) write Hit rows; its spans go to a file.
One worker, three tasks, a few seconds.
"""

import datetime as dt
import json

import pytest
from django.utils import timezone

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.testapp.models import Hit


def hits(name, task, detail=None):
    found = Hit.objects.filter(name=name, task_id=task.pk)
    return found if detail is None else found.filter(row_pk=detail)


def test_a_worker_signals_its_runs_and_traces_them(start_worker, tmp_path):
    spans_file = tmp_path / "spans.jsonl"
    worker = start_worker("signals", env={"SISY_TEST_SIGNALS": str(spans_file)})
    fails = task_with_callable(
        "tests.testapp.receivers.fail", label="fails", schedule="* * * * * *"
    )
    fails.save()
    succeeds = task_with_callable(
        "tests.testapp.receivers.succeed", label="succeeds", schedule="* * * * * *"
    )
    succeeds.enabled = False
    succeeds.save()
    wait_until(lambda: hits("run_finished", fails).exists(), timeout=10)
    # Enabled 10 s in the past: the planner records the older instants missed.
    Task.objects.filter(pk=succeeds.pk).update(
        enabled=True, next_run=timezone.now() - dt.timedelta(seconds=10)
    )
    wait_until(
        lambda: (
            hits("run_finished", fails, "failed").count() >= 3
            and hits("run_finished", succeeds, "succeeded").exists()
            and hits("run_not_run", succeeds).exists()
        ),
        timeout=15,
    )

    # run_finished: once per run, with the status the history has, despite
    # the receiver before it raising every time.
    # (start_worker's probe, run and deleted before, is none of this test's.)
    finished = list(Hit.objects.filter(name="run_finished", task_id__in=[fails.pk, succeeds.pk]))
    assert len({hit.run_id for hit in finished}) == len(finished)
    for hit in finished:
        assert TaskRun.objects.get(pk=hit.run_id).status == hit.row_pk
    assert "A receiver of sisy_pg.signals.run_finished" in worker.output()
    assert "a receiver that raises" in worker.output()

    # The recipe: mailed once, for the second failure in a row.
    failed = list(TaskRun.objects.filter(task=fails, status="failed").order_by("scheduled_for"))
    (mailed,) = hits("mailed", fails)
    assert mailed.run_id == failed[1].pk and mailed.row_pk == "fails failed twice in a row"

    # run_not_run: the instants the planner did not run, with their reason.
    (missed,) = hits("run_not_run", succeeds, "missed")
    assert TaskRun.objects.get(pk=missed.run_id).status == "missed"

    # run_started: in the callable's thread, for the runs after the receivers' import.
    started = {
        hit.run_id
        for hit in Hit.objects.filter(name="run_started", task_id__in=[fails.pk, succeeds.pk])
    }
    assert failed[2].pk in started
    assert not TaskRun.objects.filter(pk__in=started, started_at=None).exists()

    # Spans: one per run (ended before its run_finished), with its task,
    # instant, attempt, lag and outcome; and the planner's steps.
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    runs = {s["attributes"]["sisy.run.id"]: s for s in spans if s["name"] == "sisy.run"}
    run = failed[2]
    span = runs[run.pk]["attributes"]
    assert span["sisy.task.id"] == fails.pk and span["sisy.task.label"] == "fails"
    assert span["sisy.run.outcome"] == "failed" and span["sisy.run.attempt"] == 1
    assert dt.datetime.fromisoformat(span["sisy.run.scheduled_for"]) == run.scheduled_for
    assert span["sisy.run.lag_seconds"] == pytest.approx(run.lag.total_seconds(), abs=1e-3)
    assert runs[run.pk]["status"]["status_code"] == "ERROR"
    assert any(event["name"] == "exception" for event in runs[run.pk]["events"])
    succeeded = hits("run_finished", succeeds, "succeeded").first().run_id
    assert runs[succeeded]["attributes"]["sisy.run.outcome"] == "succeeded"
    assert runs[succeeded]["status"]["status_code"] == "UNSET"
    claims = [s for s in spans if s["name"] == "sisy.planner.claim"]
    assert any(s["attributes"]["sisy.not_run"] >= 1 for s in claims)
