"""Callables that never return, end to end: real workers, real PostgreSQL.

The issue's probe: one every-second task whose callable never returns,
beside healthy every-second tasks, on a worker of 8 slots. Before the fair
share it held all 8 slots within 4 s and the healthy tasks ran 0 times in
36 s. Here a task holds at most its share (half the slots), its fires beyond
it are recorded (skipped, reason fair_share), a copy with a timeout is
recorded timed out while its thread keeps counting against it, and SIGTERM
ends the worker within its bound, recording the runs it abandons.
"""

from __future__ import annotations

import datetime as dt
import signal
import time

import pytest

from sisy_pg.models import Task, TaskRun
from sisy_pg.worker import STUCK_EXIT_STATUS
from tests.helpers import wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.long

LIVENESS_SETTINGS = {"DJANGO_SETTINGS_MODULE": "tests.liveness_settings"}


def every_second(func, label, options=None):
    from sisy_pg.models import task_with_callable

    task = task_with_callable(func, label=label, schedule="* * * * * *")
    task.options = options or {}
    task.save()
    return task


def executed_share(task: Task, start: dt.datetime, end: dt.datetime) -> float:
    """The share of the instants in [start, end) that ran (started)."""
    instants = int((end - start).total_seconds())
    started = TaskRun.objects.filter(
        task=task, scheduled_for__gte=start, scheduled_for__lt=end, started_at__isnull=False
    ).count()
    return started / instants


def test_never_returning_callables_starve_no_other_task(start_worker):
    worker = start_worker("w1", "--concurrency", "8", env=LIVENESS_SETTINGS)
    hanging = every_second(jobs.hang, "hangs")
    hanging_with_timeout = every_second(jobs.hang, "hangs, timeout 2", {"timeout": 2})
    healthy = [every_second(jobs.record, f"healthy {n}") for n in range(5)]
    time.sleep(5)  # the hanging tasks reach their share
    start = Task.objects.get(pk=healthy[0].pk).next_run
    time.sleep(15)
    end = Task.objects.get(pk=healthy[0].pk).last_run
    shares = [executed_share(task, start, end) for task in healthy]
    assert min(shares) >= 0.95, shares

    # Each hanging task holds at most its share (4 of 8 slots): the fires beyond it are
    # recorded, with their reason, not queued.
    for task in (hanging, hanging_with_timeout):
        running = TaskRun.objects.filter(task=task, status="running").count()
        assert running <= 4
        over = TaskRun.objects.filter(task=task, status="skipped", details__reason="fair_share")
        assert over.exists()
        assert "already holds" in over.first().error and "callable slots" in over.first().error
    assert not TaskRun.objects.filter(
        task__in=healthy, status="queued", scheduled_for__lt=end
    ).exists()

    # The copy with a timeout: its runs are timed out, their threads still count against it.
    timed_out = TaskRun.objects.filter(task=hanging_with_timeout, status="timed_out")
    assert timed_out.count() >= 1
    assert TaskRun.objects.filter(task=hanging_with_timeout, status="running").count() == 0
    assert (
        "run_stuck" in worker.output() or "still running past the task's timeout" in worker.output()
    )

    # SIGTERM ends the worker within its bound (SISY_SHUTDOWN_TIMEOUT, 3 s here), and the
    # runs it abandons are recorded as interrupted.
    stopped_at = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=15)
    took = time.monotonic() - stopped_at
    assert took < 10, took
    interrupted = TaskRun.objects.filter(
        task=hanging, status="failed", details__reason="interrupted"
    )
    assert interrupted.exists(), worker.output()
    assert not TaskRun.objects.filter(
        task__in=[hanging, hanging_with_timeout], status="running"
    ).exists()
    print(
        f"healthy tasks executed {min(shares):.1%} of their instants at least; SIGTERM to exit {took:.1f} s"
    )


def test_a_worker_whose_slots_are_all_stuck_exits_for_its_supervisor(start_worker):
    # Two slots, a share of 1 each: two tasks that hang past their timeout take them all.
    worker = start_worker("w1", "--concurrency", "2", env=LIVENESS_SETTINGS)
    every_second(jobs.hang, "hangs a", {"timeout": 1})
    every_second(jobs.hang, "hangs b", {"timeout": 1})
    # timeout 1 s (+1 s before the runner gives up on it), then SISY_STUCK_EXIT_AFTER 4 s.
    wait_until(lambda: worker.process.poll() is not None, timeout=30, interval=0.2)
    assert worker.process.returncode == STUCK_EXIT_STATUS, worker.output()
    assert "the worker exits with status 3" in worker.output()
