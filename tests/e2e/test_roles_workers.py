"""The roles of sql/roles.sql with real processes: a worker that plans and runs a task, the monitor's health command."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from django.db import connection

from devtools.workers import ROOT
from sisy_pg.models import TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def query_rows(query: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchall()


def test_the_worker_role_plans_and_runs_a_task_end_to_end(roles, start_worker):
    worker = start_worker("as-role", env={"DATABASE_URL": roles["worker"]})
    # It really is the worker role: the planner's session logged in as its member.
    login = psycopg.conninfo.conninfo_to_dict(roles["worker"])["user"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'sisy-planner'"
            " AND datname = current_database()"
        )
        assert cursor.fetchall() == [(login,)]
    # A task of every-second fires, succeeds, and its failing sibling is retried then failed.
    task = task_with_callable(jobs.record, label="Every second", schedule="* * * * * *")
    task.save()
    failing = task_with_callable(jobs.fail, label="Failing", schedule="* * * * * *")
    failing.options = {"retries": 1, "retry_delay": 0.1}
    failing.save()
    wait_until(
        lambda: TaskRun.objects.filter(task=task, status="succeeded").count() >= 2, timeout=30
    )
    wait_until(lambda: TaskRun.objects.filter(task=failing, status="failed").exists(), timeout=30)
    run = TaskRun.objects.filter(task=failing, status="failed").first()
    assert run is not None and len(run.details["attempts"]) == 1
    # It reports itself as the worker role (its first report follows procrastinate's
    # registration of the worker), then its liveness probe, as the same role, passes.
    wait_until(lambda: query_rows("SELECT 1 FROM sisy_worker WHERE plans"), timeout=30)
    probe = subprocess.run(
        [sys.executable, "-m", "django", "sisy", "health"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": roles["worker"],
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "permission denied" not in worker.output(), worker.output()


def test_the_monitor_runs_the_health_command(roles):
    """The probe needs no right but the monitor's: it fails for its reasons, not for permissions."""
    probe = subprocess.run(
        [sys.executable, "-m", "django", "sisy", "health", "--json"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": roles["monitor"],
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "permission denied" not in probe.stderr, probe.stderr
    assert '"checks"' in probe.stdout, probe.stdout + probe.stderr
