"""The end-to-end tier: real worker processes, projects run in subprocesses, PgBouncer, a browser.

Every test here is marked ``e2e`` (``-m "not e2e"`` leaves the tier out).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection

from tests.e2e.helpers import Worker
from tests.helpers import wait_until

TIER = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TIER in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _database_server(database_server: str) -> None:
    """Every test here has the test server, and DATABASE_URL names it (for its processes)."""


@pytest.fixture
def start_worker(transactional_db):
    """Start worker processes; wait until each plans and runs; stop them afterwards."""
    from sisy_pg.models import Task, TaskRun

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs")
        # Rows of workers of earlier tests (no model maps sisy_worker: flushes leave it).
        cursor.execute("DELETE FROM sisy_worker")
    workers: list[Worker] = []

    def start(name: str = "w1", *args: str, env: dict[str, str] | None = None) -> Worker:
        worker = Worker(name, *args, env=env)
        workers.append(worker)
        wait_until(
            lambda: not worker.alive() or "sisy planner starting" in worker.output(), timeout=60
        )
        # Ready when a one-off task created now has run: the planner, the
        # LISTEN connections and the job runner are all up.
        probe = Task.run_once("tests.testapp.jobs.record")
        try:
            wait_until(
                lambda: (
                    not worker.alive()
                    or TaskRun.objects.filter(task=probe, status="succeeded").exists()
                ),
                timeout=60,
            )
        finally:
            assert worker.alive(), worker.output()
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
