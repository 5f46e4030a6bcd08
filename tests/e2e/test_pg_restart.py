"""PostgreSQL restarted under three running workers.

The workers survive, and within seconds they fire on time again: sisy's
planner reconnects, and procrastinate's job LISTEN connection is back (not
left to the polling interval, 5 s in tests/settings.py). Instants while the
server was down may be missed; none runs twice, and every instant after the
recovery runs once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import statistics
import time

import pytest
from django.db import connection
from django.utils import timezone

from devtools import embedded_pg
from sisy_pg.models import TaskRun, task_with_callable
from tests.e2e.helpers import instants_in
from tests.helpers import wait_until
from tests.testapp import jobs
from tests.testapp.models import Hit

TASKS = 3
MEASURE = 6.0  # seconds of every-second runs per measurement
DOWN_FOR = 1.0  # seconds the server stays down
RECOVERY = 5.0  # seconds after the server is back by which firing is on time again


def lags(tasks, start: dt.datetime, end: dt.datetime) -> list[float]:
    """Lag (s) of the runs of ``tasks`` for instants in [start, end); each instant ran once."""
    runs = list(
        TaskRun.objects.filter(
            task__in=tasks, scheduled_for__gte=start, scheduled_for__lt=end
        ).order_by("task_id", "scheduled_for")
    )
    assert {run.status for run in runs} == {"succeeded"}, [
        (run.task_id, run.scheduled_for, run.status, run.error) for run in runs
    ]
    for task in tasks:
        ran = [run.scheduled_for for run in runs if run.task_id == task.pk]
        assert ran == instants_in(start, end), (task.pk, ran)  # each once, none missing
    return [run.lag.total_seconds() for run in runs]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def figures(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):.3f} s, p95 {p95(values):.3f} s, "
        f"max {max(values):.3f} s over {len(values)} runs"
    )


def measure(tasks, seconds: float) -> list[float]:
    """Lags of the runs for the instants of the next ``seconds`` s."""
    start = timezone.now()
    end = start + dt.timedelta(seconds=seconds)
    expected = len(tasks) * len(instants_in(start, end))
    time.sleep(seconds)
    done = TaskRun.objects.filter(
        task__in=tasks, scheduled_for__gte=start, scheduled_for__lt=end, status="succeeded"
    )
    with contextlib.suppress(AssertionError):  # lags() says what is missing
        wait_until(lambda: done.count() == expected, timeout=7, interval=0.1)
    return lags(tasks, start, end)


def test_firing_is_on_time_again_within_seconds_of_a_restart(start_worker):
    if embedded_pg.started_server() is None:
        pytest.skip("DATABASE_URL is a server of yours: this test restarts the server it started")
    workers = [start_worker(f"w{n}") for n in range(1, 4)]
    for worker in workers:
        worker.expect_planner_errors = True  # the planners log their reconnection
    tasks = [
        task_with_callable(jobs.record, label=f"tick {n}", schedule="* * * * * *")
        for n in range(TASKS)
    ]
    for task in tasks:
        task.save()
    time.sleep(1.5)

    before = measure(tasks, MEASURE)
    connection.close()
    stopped_at = timezone.now()
    embedded_pg.restart_server(down_for=DOWN_FOR)
    connection.close()  # this process's connection went with the server
    time.sleep(RECOVERY)
    after = measure(tasks, MEASURE)

    report = f"before the restart: {figures(before)}; after: {figures(after)}"
    print(report)
    for worker in workers:
        assert worker.process.poll() is None, worker.output()
    assert p95(before) < 0.5, report
    assert p95(after) < 0.5, report
    for worker in workers:
        # The loss is said, and so is the return (procrastinate's own log says neither).
        output = worker.output()
        assert "procrastinate's job LISTEN connection was lost" in output, output
        assert "procrastinate's job LISTEN connection is back" in output, output
    # No callable ran twice for an instant, across the outage too.
    hits = list(
        Hit.objects.filter(
            task_id__in=[t.pk for t in tasks], scheduled_for__gte=stopped_at
        ).values_list("task_id", "scheduled_for")
    )
    assert len(hits) == len(set(hits)), sorted(hits)
