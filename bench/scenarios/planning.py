"""The scale scenario's planning cost: the planner's fire_due on due tasks among many, rolled back.

CPU of this process (the planner's Python) and of the server backend it talks
to, per task, at a small and at the big size: it should not grow with the
number of tasks defined.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench.core import Bench, NotMeasured


def cost(bench: Bench, defined: int) -> dict[str, float]:
    """The planner's fire_due on ``plan_due`` due tasks among ``defined``, rolled back:
    wall time (median) and CPU (this process + the server backend) per task."""
    due = bench.mode.plan_due
    try:
        make_planner, options = planner_factory()
    except Exception as exc:
        raise NotMeasured(f"the planner's API changed: {exc!r}") from exc
    bench.db.q(
        """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
           SELECT 'due-' || n, %s::jsonb, '* * * * *', 'UTC', now() - interval '1 ms'
             FROM generate_series(1, %s) AS n""",
        [bench.callable_info, due],
    )
    bench.db.q("VACUUM (ANALYZE) sisy_task, sisy_taskrun")
    bench.db.quiesce()

    async def measure() -> dict[str, float]:
        planner = make_planner(options)
        walls: list[float] = []
        async with await psycopg.AsyncConnection.connect(
            bench.db.url, autocommit=True, row_factory=dict_row
        ) as conn:
            [row] = await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchall()
            backend = row["pid"]
            fired = 0
            async with conn.transaction(force_rollback=True):  # warm-up
                fired = await planner.fire_due(conn)
            if fired != due:
                raise RuntimeError(f"fire_due fired {fired} of {due} due tasks")
            cpu_start, server_start = time.process_time(), backend_cpu(backend)
            for _ in range(bench.mode.plan_repeat):
                async with conn.transaction(force_rollback=True):
                    start = time.perf_counter()
                    await planner.fire_due(conn)
                    walls.append(time.perf_counter() - start)
            client = time.process_time() - cpu_start
            server_end = backend_cpu(backend)
        calls = bench.mode.plan_repeat * due
        server = (
            server_end - server_start
            if server_start is not None and server_end is not None
            else math.nan
        )
        return {
            "defined": defined,
            "wall_us": statistics.median(walls) / due * 1e6,
            "client_us": client / calls * 1e6,
            "server_us": server / calls * 1e6,
            "cpu_us": (client + (0 if math.isnan(server) else server)) / calls * 1e6,
        }

    try:
        return asyncio.run(measure())
    finally:
        bench.db.q("DELETE FROM sisy_task WHERE label LIKE 'due-%%'")


def planner_factory() -> tuple[Callable[[Any], Any], Any]:
    """sisy's planner as a worker would make it (its options' fields may change)."""
    from sisy_pg import procrastinate_seam, worker

    known: dict[str, Any] = {"queues": None, "stalled_worker_timeout": 30.0, "concurrency": 8}
    parameters = inspect.signature(procrastinate_seam.WorkerOptions).parameters
    options = procrastinate_seam.WorkerOptions(
        **{name: known[name] for name in parameters if name in known}
    )
    return worker.make_planner, options


def backend_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a local server process, from /proc (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
