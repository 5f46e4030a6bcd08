"""One clock: workers whose clocks are wrong still fire every instant once, on time.

Every scheduling decision (due, stale, hold until the instant) is taken on
the database's clock. Workers run under libfaketime (Debian's ``faketime``)
beside a healthy one.
"""

from __future__ import annotations

import datetime as dt
import glob

import pytest

from sisy_pg.models import TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.testapp import jobs

LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)


def skewed(offset: str) -> dict[str, str]:
    """The environment of a process whose clock is ``offset`` (e.g. "+90s") off."""
    if LIBFAKETIME is None:
        pytest.skip("libfaketime is not installed (Debian: apt-get install faketime)")
    # Every clock of the process is shifted (libfaketime 0.9.10 breaks
    # time.sleep with FAKETIME_DONT_FAKE_MONOTONIC): durations stay true.
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": offset}


def test_skewed_workers_neither_lose_nor_delay_nor_hurry_instants(start_worker):
    start_worker("healthy")
    start_worker("ahead", env=skewed("+90s"))
    start_worker("behind", env=skewed("-5s"))
    tasks = [
        task_with_callable(jobs.record, label=f"tick {n}", schedule="* * * * * *") for n in range(2)
    ]
    for task in tasks:
        task.save()
    wait_until(
        lambda: TaskRun.objects.filter(task__in=tasks, status="succeeded").count() >= 16,
        timeout=30,
    )
    for task in tasks:
        task.enabled = False
        task.save()

    runs = list(TaskRun.objects.filter(task__in=tasks).order_by("task_id", "scheduled_for"))
    decided = [run for run in runs if run.status != "cancelled"]
    assert {run.status for run in decided} == {"succeeded"}, [
        (run.scheduled_for, run.status, run.error) for run in decided
    ]
    for task in tasks:
        instants = [run.scheduled_for for run in decided if run.task_id == task.pk]
        # Every second from the first run to the last: none lost, none twice.
        expected = [instants[0] + dt.timedelta(seconds=n) for n in range(len(instants))]
        assert instants == expected, [(r.scheduled_for, r.worker) for r in decided]
    lags = [run.lag.total_seconds() for run in decided]
    # Never before the instant (the +90 s worker), never seconds late (the -5 s one).
    assert min(lags) >= 0, lags
    assert max(lags) < 1.0, lags
    workers = {run.worker.rsplit(":", 1)[-1] for run in decided}
    assert {"ahead", "behind"} & workers, workers  # the skewed workers did run instants
