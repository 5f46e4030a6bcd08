"""lag: every-second tasks on one worker, started_at - scheduled_for (the database's clock).

Yardstick: as many procrastinate periodic tasks on the same cron and worker.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from typing import Any

from bench.core import NOOP, Bench, summary_ms
from devtools.workers import WorkerProcess


def run(bench: Bench) -> None:
    m = bench.mode
    span = m.warmup + m.lag_seconds + 3
    with (
        bench.progress.phase("lag: procrastinate periodic (yardstick)", span + 4),
        bench.attempt("lag yardstick"),
    ):
        bench.details["lag_periodic"] = periodic_lag(bench)
    with bench.progress.phase("lag: sisy-pg", span + 5), bench.attempt("lag"):
        bench.details["lag_sisy"] = s = sisy_lag(bench)
        bench.figures["lag_p50_ms"] = s["p50"]
        bench.figures["lag_p99_ms"] = s["p99"]


def every_second_window(
    bench: Bench, worker_name: str, target: Any, prefix: str
) -> tuple[dt.datetime, dt.datetime, float | None]:
    """``lag_tasks`` every-second tasks of ``target`` (labelled ``prefix``N) on one worker,
    measured over a window after a warm-up: (its start, its end, the worker's CPU in it).
    The tasks are disabled and the worker stopped when the runs in flight are done."""
    from sisy_pg.models import Task, task_with_callable

    m = bench.mode
    bench.db.reset()
    (worker,) = bench.workers.start_ready([(worker_name, bench.concurrency, {})])
    time.sleep(1)
    created = bench.db.now()
    for number in range(m.lag_tasks):
        task = task_with_callable(target, label=f"{prefix}{number}", schedule="* * * * * *")
        task.timezone = "UTC"
        task.save()
    start = created + dt.timedelta(seconds=m.warmup)
    end = start + dt.timedelta(seconds=m.lag_seconds)
    cpu = window_cpu(bench, worker, start, end)
    bench.sleep_until(end + dt.timedelta(seconds=m.warmup), [worker])  # runs in flight
    Task.objects.filter(label__startswith=prefix).update(enabled=False)
    bench.workers.stop(worker)
    return start, end, cpu


def sisy_lag(bench: Bench) -> dict[str, Any]:
    m = bench.mode
    start, end, cpu = every_second_window(bench, "lag-sisy", NOOP, "lag-")
    rows = bench.db.q(
        """SELECT extract(epoch FROM started_at - scheduled_for)::float8, status
             FROM sisy_taskrun
            WHERE scheduled_for >= %s AND scheduled_for < %s""",
        [start, end],
    )
    return lag_summary(
        [r[0] for r in rows if r[0] is not None],
        expected=instants(start, end) * m.lag_tasks,
        statuses=Counter(r[1] for r in rows),
        cpu_s=cpu,
    )


def periodic_lag(bench: Bench) -> dict[str, Any]:
    m = bench.mode
    bench.db.reset()
    (worker,) = bench.workers.start_ready(
        [("lag-periodic", bench.concurrency, {"BENCH_PERIODIC": str(m.lag_tasks)})]
    )
    start = bench.db.now() + dt.timedelta(seconds=m.warmup)
    end = start + dt.timedelta(seconds=m.lag_seconds)
    cpu = window_cpu(bench, worker, start, end)
    bench.sleep_until(end + dt.timedelta(seconds=m.warmup), [worker])  # runs in flight
    bench.workers.stop(worker)
    rows = bench.db.q(
        """SELECT extract(epoch FROM e.at)::float8 - (j.args ->> 'timestamp')::float8
             FROM procrastinate_jobs AS j
             JOIN procrastinate_events AS e ON e.job_id = j.id AND e.type = 'started'
            WHERE j.task_name = 'bench.periodic'
              AND (j.args ->> 'timestamp')::float8 >= extract(epoch FROM %s::timestamptz)
              AND (j.args ->> 'timestamp')::float8 < extract(epoch FROM %s::timestamptz)""",
        [start, end],
    )
    return lag_summary([r[0] for r in rows], expected=instants(start, end) * m.lag_tasks, cpu_s=cpu)


def instants(start: dt.datetime, end: dt.datetime) -> int:
    """Whole seconds in [start, end)."""
    return math.ceil(end.timestamp()) - math.ceil(start.timestamp())


def window_cpu(
    bench: Bench, worker: WorkerProcess, start: dt.datetime, end: dt.datetime
) -> float | None:
    """The worker's CPU seconds from ``start`` to ``end`` (the database's clock)."""
    bench.sleep_until(start, [worker])
    before = worker.cpu_s()
    bench.sleep_until(end, [worker])
    after = worker.cpu_s()
    return None if before is None or after is None else after - before


def lag_summary(
    lags: list[float],
    expected: int,
    statuses: Counter[str] | None = None,
    cpu_s: float | None = None,
) -> dict[str, Any]:
    # An expected instant that did not start counts as infinitely late.
    missing = max(expected - len(lags), 0)
    result: dict[str, Any] = summary_ms(lags + [math.inf] * missing)
    result.update(started=len(lags), expected=expected, statuses=dict(statuses or {}))
    if cpu_s is not None and expected:  # the worker's CPU over the window, per instant
        result["cpu_ms"] = cpu_s * 1000 / expected
    return result
