"""rss: the worker's RSS with the big size of tasks defined, after it ran a while.

Yardstick: a worker beside it with SISY_PLANNER_ENABLED=False (it runs jobs, never plans).
"""

from __future__ import annotations

import math
import time

from bench.core import Bench


def run(bench: Bench) -> None:
    m = bench.mode
    with (
        bench.progress.phase(
            f"rss: {m.big:,} tasks", 8 + (m.big - m.idle_tasks) / 20000 + m.rss_settle
        ),
        bench.attempt("rss"),
    ):
        # The idle scenario's tasks stay; add up to the big size.
        have = bench.db.one("SELECT count(*) FROM sisy_task")
        if have < m.idle_tasks:
            bench.db.reset()
            have = 0
        bench.insert_defined(have + 1, m.big)
        bench.db.q("ANALYZE sisy_task")
        bench.details["rss"] = result = measure(bench)
        bench.figures["rss_mb"] = result["sisy"]


def measure(bench: Bench) -> dict[str, float]:
    sisy, plain = bench.workers.start_ready(
        [
            ("rss-sisy", bench.concurrency, {}),
            ("rss-plain", bench.concurrency, {"SISY_PLANNER_ENABLED": "False"}),
        ]
    )
    samples: dict[str, list[float]] = {"sisy": [], "plain": []}
    deadline = time.monotonic() + bench.mode.rss_settle
    while time.monotonic() < deadline:
        time.sleep(1)
        bench.workers.check_alive(sisy, plain)
        for key, worker in (("sisy", sisy), ("plain", plain)):
            value = worker.rss_mb()
            if value is not None:
                samples[key].append(value)
    unplanned = bench.db.one("SELECT count(*) FROM sisy_task WHERE enabled AND next_run IS NULL")
    bench.workers.stop(sisy, plain)
    return {
        "sisy": max(samples["sisy"], default=math.nan),
        "plain": max(samples["plain"], default=math.nan),
        "defined": bench.db.one("SELECT count(*) FROM sisy_task"),
        "unplanned": unplanned,
        "seconds": bench.mode.rss_settle,
    }
