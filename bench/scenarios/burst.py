"""burst: no-op tasks due at one instant T on an idle worker (``--concurrency 8``).

max(finished_at) - T, beside its yardstick: as many plain procrastinate no-op
jobs batch-deferred in one transaction, from the commit to the last
'succeeded' event.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from bench.core import Bench

CONCURRENCY = 8


def run(bench: Bench) -> None:
    n = bench.mode.burst
    with (
        bench.progress.phase(f"burst: {n:,} procrastinate jobs", 6 + n / 500),
        bench.attempt("burst yardstick"),
    ):
        bench.details["burst_procrastinate"] = procrastinate_burst(bench)
    with bench.progress.phase(f"burst: {n:,} sisy-pg runs", 8 + n / 130), bench.attempt("burst"):
        bench.details["burst_sisy"] = sisy_burst(bench)
    sisy = bench.details.get("burst_sisy", {}).get("seconds")
    plain = bench.details.get("burst_procrastinate", {}).get("seconds")
    if sisy is not None and plain:
        bench.figures["burst_ratio"] = sisy / plain


def timeout(bench: Bench) -> float:
    return 60 + bench.mode.burst / 20


def procrastinate_burst(bench: Bench) -> dict[str, Any]:
    from django.db import connection, transaction

    from bench.yardstick_tasks import plain_noop

    n = bench.mode.burst
    bench.db.reset()
    (worker,) = bench.workers.start_ready([("burst-procrastinate", CONCURRENCY, {})])
    time.sleep(1)
    with transaction.atomic():
        plain_noop.batch_defer(*({} for _ in range(n)))
        with connection.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()")
            committed = cursor.fetchone()[0]
    deadline = time.monotonic() + timeout(bench)
    while True:
        done, last = bench.db.q(
            """SELECT count(*), max(e.at) FROM procrastinate_events AS e
                 JOIN procrastinate_jobs AS j ON j.id = e.job_id
                WHERE j.task_name = 'bench.noop' AND e.type IN ('succeeded', 'failed')"""
        )[0]
        if done >= n or time.monotonic() > deadline:
            break
        bench.workers.check_alive(worker)
        time.sleep(0.2)
    bench.workers.stop(worker)
    connection.close()
    if done < n:
        return {"seconds": math.inf, "done": done, "n": n}
    seconds = (last - committed).total_seconds()
    return {"seconds": seconds, "done": done, "n": n, "per_s": n / seconds}


def sisy_burst(bench: Bench) -> dict[str, Any]:
    n = bench.mode.burst
    bench.db.reset()
    (worker,) = bench.workers.start_ready([("burst-sisy", CONCURRENCY, {})])
    time.sleep(1)
    now = bench.db.now()
    instant = (now + dt.timedelta(seconds=3 + n / 4000)).replace(microsecond=0)
    instant = instant.astimezone(dt.timezone.utc)
    # sisy's sixth field is the second (croniter's order).
    cron = f"{instant.minute} {instant.hour} {instant.day} {instant.month} * {instant.second}"
    bench.db.q(
        """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
           SELECT 'burst-' || n, %s::jsonb, %s, 'UTC', %s FROM generate_series(1, %s) AS n""",
        [bench.callable_info, cron, instant, n],
    )
    inserted = bench.db.now()
    if inserted >= instant:
        raise RuntimeError("inserting the burst took longer than its lead: raise it")
    deadline = time.monotonic() + timeout(bench) + (instant - now).total_seconds()
    while True:
        done, last = bench.db.q(
            """SELECT count(*) FILTER (WHERE status NOT IN ('queued', 'running')),
                      max(finished_at)
                 FROM sisy_taskrun WHERE scheduled_for = %s""",
            [instant],
        )[0]
        if done >= n or time.monotonic() > deadline:
            break
        bench.workers.check_alive(worker)
        broken = bench.db.q("SELECT error FROM sisy_task WHERE error <> '' LIMIT 1")
        if broken:
            raise RuntimeError(f"a burst task is broken: {broken[0][0]}")
        time.sleep(0.2)
    bench.workers.stop(worker)
    statuses = dict(
        bench.db.q(
            "SELECT status, count(*) FROM sisy_taskrun WHERE scheduled_for = %s GROUP BY 1",
            [instant],
        )
    )
    first_start = bench.db.one(
        "SELECT extract(epoch FROM min(started_at) - %s::timestamptz)::float8 "
        "FROM sisy_taskrun WHERE scheduled_for = %s",
        [instant, instant],
    )
    if done < n:
        return {"seconds": math.inf, "done": done, "n": n, "statuses": statuses}
    seconds = (last - instant).total_seconds()
    return {
        "seconds": seconds,
        "done": done,
        "n": n,
        "per_s": n / seconds if seconds > 0 else math.inf,
        "statuses": statuses,
        "first_start_ms": first_start * 1000 if first_start is not None else math.nan,
        "lead_s": (instant - inserted).total_seconds(),
    }
