"""Metrics of a real worker's runs: counted as they end."""

from __future__ import annotations

import collections
import io

from django.core.management import call_command
from django.test import Client

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.integration.helpers import gauge, parsed, runs_by_outcome, scrape
from tests.testapp import jobs

FINAL = ("succeeded", "failed", "timed_out", "skipped", "missed", "cancelled")


def test_a_worker_s_runs_are_counted_as_they_end(start_worker, admin_client):
    start_worker()
    before = scrape()
    works = task_with_callable(jobs.record, label="works", schedule="* * * * * *")
    works.save()
    fails = task_with_callable(jobs.fail, label="fails", schedule="* * * * * *")
    fails.save()
    wait_until(
        lambda: all(
            TaskRun.objects.filter(task=task, status__in=FINAL).count() >= 2
            for task in (works, fails)
        ),
        timeout=15,
    )
    Task.objects.update(enabled=False)
    wait_until(lambda: not TaskRun.objects.filter(status__in=["queued", "running"]).exists(), 10)

    out = io.StringIO()
    call_command("sisy", "metrics", stdout=out)
    after = parsed(out.getvalue())
    counted = runs_by_outcome(after)
    counted.subtract(runs_by_outcome(before))
    recorded = collections.Counter(
        (run.status, (run.details or {}).get("reason", "")) for run in TaskRun.objects.all()
    )
    assert +counted == recorded
    assert recorded[("succeeded", "")] >= 2 and recorded[("failed", "")] >= 2
    started = TaskRun.objects.filter(started_at__isnull=False).count()
    lag_count = (
        after[("sisy_run_lag_seconds_count", ())] - before[("sisy_run_lag_seconds_count", ())]
    )
    assert lag_count == started
    assert (
        after[("sisy_run_lag_seconds_bucket", (("le", "+Inf"),))]
        == after[("sisy_run_lag_seconds_count", ())]
    )
    assert gauge(after, "sisy_tasks", state="paused") == 2
    assert gauge(after, "sisy_workers", planning="true") == 1

    # The view, as a staff user, says the same; an anonymous request is refused.
    response = admin_client.get("/sisy/metrics")
    assert response.status_code == 200
    assert runs_by_outcome(parsed(response.content.decode())) == runs_by_outcome(after)
    assert Client().get("/sisy/metrics").status_code == 403
