"""scale: what many defined tasks cost the workers, on one table that grows.

In order: procrastinate's fetch and the planner's cost with no tasks; creating
tasks through the public API; the idle scenario's tasks and its statements;
up to the big size for the workers' RSS; the fetch, the planner's cost and the
hot queries' plans at the big size; the fetch again with sisy-pg's tables
emptied (the yardstick beside it) and at the end; the parked-jobs yardstick.
"""

from __future__ import annotations

import statistics

from bench.core import Bench
from bench.scenarios import create, fetch, idle, planning, plans, rss


def run(bench: Bench) -> None:
    m = bench.mode
    fetched: dict[str, float] = {}
    none_samples: list[float] = []
    plan: dict[str, dict[str, float]] = {}
    parked: dict[int, float] = {}
    bench.db.reset()
    with bench.progress.phase("scale: fetch and planning, no tasks", 5):
        with bench.attempt("fetch (no tasks)"):
            samples = fetch.samples(bench)
            none_samples += samples
            fetched["none_start"] = statistics.median(samples)
        with bench.attempt("plan (small)"):
            bench.insert_defined(1, m.plan_small - m.plan_due)
            plan["small"] = planning.cost(bench, m.plan_small)
        with bench.attempt("parked jobs (small)"):
            parked[m.plan_small] = fetch.parked(bench, m.plan_small)
    create.run(bench)
    idle.run(bench)
    rss.run(bench)
    with bench.progress.phase(f"scale: fetch and planning, {m.big:,} tasks", 10):
        with bench.attempt("fetch (big)"):
            if bench.db.one("SELECT count(*) FROM sisy_task") < m.big:
                bench.db.reset()
                bench.insert_defined(1, m.big)
            # Vacuumed now, so that autovacuum after the inserts does not
            # compete for the CPU while the fetch is timed.
            bench.db.q("VACUUM (ANALYZE) sisy_task, sisy_taskrun, procrastinate_jobs")
            fetched["big"] = statistics.median(fetch.samples(bench))
        with bench.attempt("plan (big)"):
            plan["big"] = planning.cost(bench, m.big)
        with bench.attempt("plans"):
            plans.explain_hot_queries(bench)
        with bench.attempt("fetch (no tasks, beside)"):
            # The yardstick beside it: the same database, the same
            # procrastinate tables, only sisy-pg's tables emptied. (Measured
            # at the start and the end instead, after other scenarios had
            # changed procrastinate's tables, it drifted by half.)
            bench.db.q("TRUNCATE sisy_task, sisy_taskrun CASCADE")
            bench.db.q("VACUUM (ANALYZE) sisy_task, sisy_taskrun")
            fetched["none_beside"] = statistics.median(fetch.samples(bench))
    bench.db.reset()
    # The baseline again, at the end: drift of the machine's load cancels.
    with (
        bench.progress.phase("scale: fetch, no tasks again", 2),
        bench.attempt("fetch (no tasks, again)"),
    ):
        samples = fetch.samples(bench)
        none_samples += samples
        fetched["none_end"] = statistics.median(samples)
    if none_samples:
        fetched["none"] = statistics.median(none_samples)
    if bench.parked_big:
        with (
            bench.progress.phase(
                f"yardstick: {m.parked_big:,} parked jobs", 3 + m.parked_big / 10000
            ),
            bench.attempt("parked jobs (big)"),
        ):
            parked[m.parked_big] = fetch.parked(bench, m.parked_big)
    bench.details["fetch"] = fetched
    bench.details["plan"] = plan
    bench.details["parked"] = parked
    if "none_beside" in fetched and "big" in fetched:
        bench.figures["scale_fetch_ratio"] = fetched["big"] / fetched["none_beside"]
    if "big" in plan:
        bench.figures["plan_us_per_task"] = plan["big"]["cpu_us"]
