"""A task's ``priority`` option: claimed first, deferred as procrastinate's job priority.

The SQL side is checked on the database alone (the claim's order and plan,
the jobs' priority and arguments); the issue's probe runs a real worker: a
canary with a priority, created beside 3,000 every-second tasks that
overload the worker, starts within 2 s.
"""

from __future__ import annotations

import statistics
import time

import pytest

from sisy_pg.models import TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.integration.helpers import insert_tasks, sql
from tests.testapp import jobs

# --- the canary -----------------------------------------------------------------------

FLOOD = 3000


def overdue_tasks():
    ((count,),) = sql(
        "SELECT count(*) FROM sisy_task "
        "WHERE enabled AND next_run < clock_timestamp() - interval '2 seconds'"
    )
    return count


def recent_lags():
    """Lags (s) of the runs that started in the last 3 s."""
    return [
        lag
        for (lag,) in sql(
            "SELECT extract(epoch FROM started_at - scheduled_for)::float8 FROM sisy_taskrun "
            "WHERE started_at > clock_timestamp() - interval '3 seconds'"
        )
    ]


def first_start_after_creation(options):
    """Create a one-second canary with ``options``; seconds from its creation to its first start."""
    canary = task_with_callable(jobs.record, label=f"canary {options}", schedule="* * * * * *")
    canary.options = options
    canary.save()
    canary.refresh_from_db()
    run = wait_until(
        lambda: (
            TaskRun.objects.filter(task=canary, started_at__isnull=False)
            .order_by("started_at")
            .first()
        ),
        timeout=60,
        interval=0.05,
    )
    canary.enabled = False
    canary.save(update_fields=["enabled"])
    return (run.started_at - canary.created_at).total_seconds(), run


@pytest.mark.long
def test_a_canary_with_a_priority_starts_within_2_s_beside_3000_every_second_tasks(
    start_worker,
):
    worker = start_worker("w1", "--concurrency", "8")
    insert_tasks(FLOOD, schedule="* * * * * *")  # planned by the worker
    started = time.monotonic()
    # Overloaded: the runs starting now are seconds late.
    wait_until(lambda: statistics.median(recent_lags() or [0]) > 2, timeout=90, interval=0.5)
    overloaded_after = time.monotonic() - started
    lags = recent_lags()
    overdue = overdue_tasks()

    # Without a priority first: the one with a priority then meets the worst of it.
    without_priority, plain_run = first_start_after_creation({})
    lags_before = recent_lags()
    with_priority, priority_run = first_start_after_creation({"priority": 100})
    lags_after = recent_lags()
    sql("UPDATE sisy_task SET enabled = false")
    print(
        f"\noverloaded after {overloaded_after:.1f} s: {overdue} of {FLOOD} tasks overdue by > 2 s, "
        f"median lag {statistics.median(lags or [0]):.1f} s ({len(lags)} runs in 3 s); "
        f"canary with priority 100 first started {with_priority:.2f} s after its creation "
        f"(lag {(priority_run.started_at - priority_run.scheduled_for).total_seconds():.2f} s), "
        f"without priority {without_priority:.2f} s "
        f"(lag {(plain_run.started_at - plain_run.scheduled_for).total_seconds():.2f} s); "
        f"median lag when it was created {statistics.median(lags_before or [0]):.1f} s, "
        f"then {statistics.median(lags_after or [0]):.1f} s"
    )
    dump = worker.output()[-5000:]
    assert with_priority < 2, dump
