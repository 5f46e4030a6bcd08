"""No catch-up burst after a stall shorter than the grace: real workers, real PostgreSQL.

A session holds the row of an every-second task locked (``SELECT ... FOR
UPDATE``, as a long admin transaction or a stuck migration would) while
another every-second task goes on. The planner skips the locked row; once
it is free, its ``next_run`` is many instants old but within the grace.
Under the default policy (``missed: coalesce``) the planner must run at
most one of those stale instants and record the rest as one ``missed``
range, instead of replaying them one after the other.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time

import psycopg
import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sisy_pg.models import TaskRun, task_with_callable
from sisy_pg.store import default_store
from tests.helpers import wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.long  # about 18 s

EVERY_SECOND = "* * * * * *"
SECOND = dt.timedelta(seconds=1)
STALL = 12  # seconds the row stays locked: well within the default grace (60 s)


def every_second(label):
    task = task_with_callable(jobs.record, label=label, schedule=EVERY_SECOND)
    task.save()
    return task


def runs(task, **filters):
    return list(TaskRun.objects.filter(task=task, **filters).order_by("scheduled_for"))


def history(*tasks):
    """The history of ``tasks``, one line per row, for assertion messages."""
    return "\n".join(
        f"task {r.task_id} run {r.id} for {r.scheduled_for:%H:%M:%S.%f} {r.status:9} "
        f"started {r.started_at and f'{r.started_at:%H:%M:%S.%f}'} {r.details} {r.error[:100]}"
        for r in TaskRun.objects.filter(task__in=tasks).order_by("task_id", "scheduled_for")
    )


def stop_firing(*tasks):
    for task in tasks:
        task.enabled = False
        task.save(update_fields=["enabled"])
    wait_until(
        lambda: not TaskRun.objects.filter(task__in=tasks, status="running").exists(),
        timeout=15,
        interval=0.1,
    )


def test_a_locked_row_is_one_missed_range_and_at_most_one_catch_up(start_worker):
    worker = start_worker("w1", "--concurrency", "4")
    locked = every_second("locked every second")
    beside = every_second("beside it every second")
    wait_until(
        lambda: min(len(runs(t, status="succeeded")) for t in (locked, beside)) >= 2, timeout=15
    )

    with psycopg.connect(**default_store().connection_params()) as holder:
        holder.execute("SELECT id FROM sisy_task WHERE id = %s FOR UPDATE", [locked.pk])
        locked_at = timezone.now()
        time.sleep(STALL)
        released_at = timezone.now()
        holder.commit()
    wait_until(
        lambda: len(runs(locked, status="succeeded", scheduled_for__gt=released_at)) >= 3,
        timeout=15,
        interval=0.1,
    )
    stop_firing(locked, beside)
    rows = [r for r in runs(locked) if r.status != "cancelled"]
    stale_executions = [
        r
        for r in rows
        if r.started_at is not None
        and r.started_at >= released_at
        and r.scheduled_for < released_at - SECOND
    ]
    missed = [r for r in rows if r.details.get("reason") == "missed"]
    ages = ", ".join(
        f"{(r.started_at - r.scheduled_for).total_seconds():.1f}" for r in stale_executions
    )
    last_start = max((r.started_at for r in stale_executions), default=released_at)
    print(  # the figures of docs/reliability.md (pytest -s shows them)
        f"\nstall {STALL} s: {len(stale_executions)} stale execution(s) of the locked task"
        + (f" (instants {ages} s old)" if stale_executions else "")
        + f", the last {(last_start - released_at).total_seconds():.2f} s after the release; "
        + "; ".join(
            f"missed {r.scheduled_for:%H:%M:%S} to {r.details['through'][11:19]}" for r in missed
        )
        + f"; released at {released_at:%H:%M:%S.%f}"
    )
    dump = (
        f"locked at {locked_at:%H:%M:%S.%f}, released at {released_at:%H:%M:%S.%f}\n"
        f"{history(locked, beside)}\n{worker.output()[-3000:]}"
    )

    # At most one instant of the stall is executed after it, ...
    assert len(stale_executions) <= 1, dump
    # ... the others are one 'missed' range lying in the stall, ...
    assert len(missed) == 1, dump
    [gap] = missed
    through = parse_datetime(gap.details["through"])
    assert gap.status == "missed" and gap.details["policy"] == "coalesce", dump
    assert locked_at - SECOND <= gap.scheduled_for <= through <= released_at + SECOND, dump
    assert (through - gap.scheduled_for).total_seconds() >= STALL - 3, dump
    # ... and no instant is lost: each has a row of its own or lies in the range.
    with_rows = {r.scheduled_for for r in rows}
    instant = rows[0].scheduled_for
    while instant <= rows[-1].scheduled_for:
        assert instant in with_rows or gap.scheduled_for <= instant <= through, (instant, dump)
        instant += SECOND
    # The schedule goes on after the stall.
    assert all(r.status == "succeeded" for r in rows if r.scheduled_for > released_at), dump

    # The task beside it ran every instant of the stall.
    during = [r for r in runs(beside) if locked_at + SECOND <= r.scheduled_for < released_at]
    assert len(during) >= STALL - 2, dump
    assert all(r.status == "succeeded" for r in during), dump
    instants = [r.scheduled_for for r in during]
    assert all(b - a == SECOND for a, b in itertools.pairwise(instants)), dump
