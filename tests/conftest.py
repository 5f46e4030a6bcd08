"""Fixtures: real PostgreSQL (tests/settings.py starts one if DATABASE_URL is unset) and real workers."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from devtools import processes
from devtools.embedded_pg import with_database

ROOT = Path(__file__).resolve().parent.parent

# Worker logs of this session, deleted at exit (their text is in the failures it explains).
_LOGS = Path(tempfile.mkdtemp(prefix="sisy-test-logs-"))
atexit.register(shutil.rmtree, _LOGS, ignore_errors=True)
# SIGTERM and SIGHUP stop the session like Ctrl-C: fixtures tear down, workers
# and the embedded PostgreSQL stop, temporary files go.
processes.exit_on_signals()


@contextlib.contextmanager
def empty_database(prefix: str = "sisy_fresh") -> Iterator[str]:
    """A new, empty database on the test server (its URL), dropped afterwards."""
    server = os.environ["DATABASE_URL"]
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, sql: str, params: object = None) -> list[tuple] | None:
    """Run ``sql`` in its own autocommit session on database ``url``; its rows, if any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


@pytest.fixture
def fresh_url() -> Iterator[str]:
    """A new, empty database on the test server for a project run in a subprocess."""
    with empty_database() as url:
        yield url


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02):
    """Poll ``predicate`` until it is truthy; return its value, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def instants_in(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The whole seconds in [start, end): the instants of an every-second task."""
    second = dt.timedelta(seconds=1)
    instant = start.replace(microsecond=0) + (second if start.microsecond else dt.timedelta())
    instants = []
    while instant < end:
        instants.append(instant)
        instant += second
    return instants


def every_second_tasks(count: int) -> list:
    """``count`` saved every-second tasks of tests.testapp.jobs.record, labelled "tick N"."""
    from sisy_pg.models import task_with_callable
    from tests.testapp import jobs

    tasks = [
        task_with_callable(jobs.record, label=f"tick {n}", schedule="* * * * * *")
        for n in range(count)
    ]
    for task in tasks:
        task.save()
    return tasks


class WorkerProcess:
    """``python -m django procrastinate worker`` (or another ``command``) against the test database."""

    def __init__(
        self,
        name: str,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        command: tuple[str, ...] = ("procrastinate", "worker"),
    ) -> None:
        self.name = name
        self.expect_planner_errors = False
        self.expect_notifications_lost = False  # behind a pooler in transaction mode
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed by stop())
            prefix=f"worker-{name}-", suffix=".log", dir=_LOGS, delete=False
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": with_database(
                os.environ["DATABASE_URL"], connection.settings_dict["NAME"]
            ),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        # Its own session, stopped at exit, killed if this process dies (devtools.processes).
        self.process = processes.spawn(
            [
                sys.executable,
                "-m",
                "django",
                *command,
                *(("--name", name) if command == ("procrastinate", "worker") else ()),
                *extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        processes.stop(self.process, timeout=20)
        self.log.close()


@pytest.fixture
def start_worker(transactional_db):
    """Start worker processes; wait until each plans and runs; stop them afterwards."""
    from sisy_pg.models import Task, TaskRun

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs")
        # Rows of workers of earlier tests (no model maps sisy_worker: flushes leave it).
        cursor.execute("DELETE FROM sisy_worker")
    workers: list[WorkerProcess] = []

    def start(
        name: str = "w1", *extra_args: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(name, extra_args, env)
        workers.append(worker)
        wait_until(
            lambda: worker.process.poll() is not None or "sisy planner starting" in worker.output(),
            timeout=60,
        )
        # Ready when a one-off task created now has run: the planner, the
        # LISTEN connections and the job runner are all up.
        probe = Task.run_once("tests.testapp.jobs.record")
        try:
            wait_until(
                lambda: (
                    worker.process.poll() is not None
                    or TaskRun.objects.filter(task=probe, status="succeeded").exists()
                ),
                timeout=60,
            )
        finally:
            assert worker.process.poll() is None, worker.output()
            probe.delete()
        return worker

    yield start
    for worker in workers:
        worker.stop()
    for worker in workers:
        output = worker.output()
        # The planner and procrastinate's side tasks never failed.
        assert worker.expect_planner_errors or "sisy planner failed" not in output, output
        assert "Side task" not in output, output
        # Notifications reach every LISTEN connection here: no false alarm of a pooler.
        assert worker.expect_notifications_lost or (
            "notifications do not reach" not in output.lower()
        ), output


@pytest.fixture
def admin_client(django_user_model):
    """A logged-in superuser named "admin" (pytest-django's own hashes a password: slow)."""
    from django.test import Client

    user = django_user_model.objects.create_superuser("admin", "admin@example.com", None)
    client = Client()
    client.force_login(user)
    return client
