"""Metrics: counted by the database as runs end, served by /sisy/metrics and `sisy metrics`.

The counters outlive the tables Django flushes between tests (no model maps
them), so each test compares what it reads before and after.
"""

from __future__ import annotations

import datetime as dt
import math

from django.db import connection
from django.db.models import F
from django.test import Client

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.integration.helpers import gauge, parsed, runs_by_outcome, scrape
from tests.testapp import jobs


def _run(task, seconds_ago, status, reason=None, lag=None, duration=None):
    """A run of ``task`` for an instant ``seconds_ago``, inserted as it ended (raw SQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO sisy_taskrun (task_id, scheduled_for, status, started_at, finished_at,
                                         details)
               SELECT %(task)s, at, %(status)s, at + make_interval(secs => %(lag)s),
                      CASE WHEN %(status)s NOT IN ('queued', 'running')
                           THEN at + make_interval(secs => coalesce(%(lag)s, 0) + %(duration)s)
                      END,
                      CASE WHEN %(reason)s::text IS NULL THEN '{}'
                           ELSE jsonb_build_object('reason', %(reason)s::text) END
                 FROM (SELECT date_trunc('second', now()) - make_interval(secs => %(ago)s) AS at)
                      AS t""",
            {
                "task": task.pk,
                "ago": seconds_ago,
                "status": status,
                "reason": reason,
                "lag": lag,
                "duration": duration or 0,
            },
        )


def test_counters_count_final_runs_survive_pruning_and_the_view_refuses_strangers(
    db, settings, django_user_model
):
    failing = task_with_callable(jobs.fail, label="failing", schedule="0 0 1 1 *")
    failing.save()
    paused = task_with_callable(jobs.record, label="paused", schedule="0 0 1 1 *")
    paused.save()
    Task.objects.filter(pk=paused.pk).update(enabled=False)
    before = scrape()

    _run(paused, 60, "succeeded", lag=0.003, duration=2.0)
    _run(paused, 50, "skipped", reason="coalesced")
    _run(failing, 40, "running", lag=0.2)
    TaskRun.objects.filter(task=failing, status="running").update(  # as a worker records it
        status="failed", finished_at=F("started_at") + dt.timedelta(seconds=1)
    )
    _run(failing, 10, "queued")
    after = scrape()

    counted = runs_by_outcome(after)
    counted.subtract(runs_by_outcome(before))
    assert +counted == {("succeeded", ""): 1, ("skipped", "coalesced"): 1, ("failed", ""): 1}
    # The two runs that started: lag buckets (cumulative), duration of both.
    grew = {key: after[key] - before.get(key, 0) for key in after if key[0].startswith("sisy_run_")}
    assert grew[("sisy_run_lag_seconds_bucket", (("le", "0.005"),))] == 1
    assert grew[("sisy_run_lag_seconds_bucket", (("le", "0.25"),))] == 2
    assert grew[("sisy_run_lag_seconds_count", ())] == 2
    assert math.isclose(grew[("sisy_run_lag_seconds_sum", ())], 0.203, abs_tol=1e-6)
    assert grew[("sisy_run_duration_seconds_count", ())] == 2
    assert gauge(after, "sisy_tasks", state="failing") == 1
    assert gauge(after, "sisy_tasks", state="paused") == 1
    assert gauge(after, "sisy_runs_waiting") == 1
    assert gauge(after, "sisy_oldest_overdue_seconds") >= 10

    # Retention deletes runs, not what they counted.
    with connection.cursor() as cursor:
        cursor.execute("SELECT sisy_prune_runs_v1('-1 day', 1000)")
        assert cursor.fetchone()[0] == 3
    pruned = scrape()
    assert runs_by_outcome(pruned) == runs_by_outcome(after)

    # Who may read /sisy/metrics.
    anonymous = Client()
    assert anonymous.get("/sisy/metrics").status_code == 403
    user = django_user_model.objects.create_user("someone")
    client = Client()
    client.force_login(user)
    assert client.get("/sisy/metrics").status_code == 403
    user.is_staff = True
    user.save()
    response = client.get("/sisy/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    assert runs_by_outcome(parsed(response.content.decode())) == runs_by_outcome(pruned)
    settings.SISY_METRICS_TOKEN = "a-token-for-prometheus"
    refused = anonymous.get("/sisy/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.get("/sisy/metrics").status_code == 401
    scraped = anonymous.get(
        "/sisy/metrics",
        HTTP_AUTHORIZATION="Bearer a-token-for-prometheus",
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
    )
    assert scraped.status_code == 200
    assert scraped["Content-Type"].startswith("application/openmetrics-text")
    assert scraped.content.decode().endswith("# EOF\n")


def test_lag_counts_from_the_jittered_instant_and_not_for_backfills(db):
    task = task_with_callable(jobs.record, label="jittered", schedule="0 0 1 1 *")
    task.save()
    before = scrape()
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO sisy_taskrun (task_id, scheduled_for, status, started_at, finished_at,
                                         details)
               VALUES (%(task)s, now() - interval '1 hour', 'succeeded',
                       now() - interval '1 hour' + interval '5.003 s',
                       now() - interval '1 hour' + interval '6 s', '{"jitter": 5}'),
                      (%(task)s, now() - interval '2 days', 'succeeded', now(), now(),
                       '{"backfill": true}')""",
            {"task": task.pk},
        )
    after = scrape()
    count = ("sisy_run_lag_seconds_count", ())
    fast = ("sisy_run_lag_seconds_bucket", (("le", "0.005"),))
    assert after[count] - before[count] == 1  # the backfill run is no lateness
    assert after[fast] - before[fast] == 1  # 3 ms late, its 5 s of jitter asked for
    assert (
        runs_by_outcome(after)[("succeeded", "")] - runs_by_outcome(before)[("succeeded", "")] == 2
    )
