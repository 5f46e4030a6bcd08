"""metrics: what a scrape costs beside a long history, and what counting a run costs.

A whole scrape (``sisy_metrics_v1``, timed from a client, and
``sisy_pg.metrics.exposition()``), 100 tasks, beside the mode's history of
finished runs vs 1,000 (and none); a scrape that folds 1,000 runs finished
since the last; the trigger's cost per inserted run (the insert with it
disabled). Yardstick: the same counters computed from the history.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from bench.core import Bench

TASKS = 100
SCRAPE = "SELECT count(*) FROM sisy_metrics_v1()"
# Each size is measured as a scraped cluster runs: what finished is folded, and
# autovacuum has given back the space of the rows folded (here, at once).
SETTLE = "VACUUM (ANALYZE) sisy_taskrun, sisy_metric_delta, sisy_metric_total"
COUNTING_TRIGGER = "sisy_taskrun_metrics_insert_v1"

# The yardstick: the runs by status and reason, and the lag histogram, computed
# from the history (what a scrape would read without the counters).
HISTORY_METRICS = """
SELECT 'runs', r.status, coalesce(r.details ->> 'reason', ''), NULL::float8, count(*)
  FROM sisy_taskrun AS r
 WHERE r.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled')
 GROUP BY 2, 3
UNION ALL
SELECT 'lag', '', '',
       width_bucket(extract(epoch FROM r.started_at - r.scheduled_for)::float8,
                    sisy_metric_buckets_v1('lag'))::float8,
       count(*)
  FROM sisy_taskrun AS r
 WHERE r.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled')
   AND r.started_at IS NOT NULL
 GROUP BY 4
"""


def run(bench: Bench) -> None:
    m = bench.mode
    with (
        bench.progress.phase(
            f"metrics: scrapes beside {m.metrics_history:,} runs of history",
            5 + m.metrics_history / 35000,
        ),
        bench.attempt("metrics"),
    ):
        bench.details["metrics"] = result = cost(bench)
        bench.figures["metrics_scrape_ratio"] = result["ratio"]


def cost(bench: Bench) -> dict[str, Any]:
    """sisy_metrics_v1 (every sample of a scrape, one statement) timed from the bench's
    client and through ``sisy_pg.metrics.exposition()``, with no history, with 10 runs a task, then
    beside ``metrics_history`` finished runs (each counted by the trigger as it was inserted);
    then a scrape that folds 1,000 runs finished since the last one. Yardstick: the same
    counts (runs by status and reason, the lag histogram) computed from the history. And
    what the trigger costs an inserted run: the same insert with it disabled."""
    m = bench.mode
    bench.db.reset()
    bench.insert_defined(1, TASKS, prefix="metrics-")
    bench.db.q(SCRAPE)  # folds what earlier scenarios left
    bench.db.q(SETTLE)
    empty = scrape_samples(bench)

    # A small history: each task's latest outcome is then an index lookup (with none,
    # it finds nothing at once).
    small = 10 * TASKS
    insert_runs(bench, 1, small)
    bench.db.q(SCRAPE)
    bench.db.q(SETTLE)
    few = scrape_samples(bench)

    # What the trigger costs an insert of finished runs: the same insert without it.
    sample = min(20_000, m.metrics_history // 4)
    bench.db.q(f"ALTER TABLE sisy_taskrun DISABLE TRIGGER {COUNTING_TRIGGER}")
    try:
        without = insert_runs(bench, small + 1, small + sample)
    finally:
        bench.db.q(f"ALTER TABLE sisy_taskrun ENABLE TRIGGER {COUNTING_TRIGGER}")
    with_trigger = insert_runs(bench, small + sample + 1, small + 2 * sample)
    filled = insert_runs(bench, small + 2 * sample + 1, m.metrics_history)
    history = bench.db.one("SELECT count(*) FROM sisy_taskrun")
    bench.db.q(SCRAPE)  # folds what the inserts left
    bench.db.q(SETTLE)
    beside = scrape_samples(bench)

    # A scrape after 1,000 more runs finished: what changed is folded, then read.
    changed = []
    with psycopg.connect(bench.db.url, autocommit=True) as scraper:
        for round_ in range(5):
            first = m.metrics_history + round_ * 1000 + 1
            insert_runs(bench, first, first + 999)
            start = time.perf_counter()
            scraper.execute(SCRAPE).fetchall()
            changed.append((time.perf_counter() - start) * 1000)

    # The yardstick: the same counters computed from the history itself.
    naive = []
    for _ in range(3):
        start = time.perf_counter()
        bench.db.q(HISTORY_METRICS)
        naive.append((time.perf_counter() - start) * 1000)
    return {
        "history": history,
        "tasks": TASKS,
        "empty": empty,
        "small": small,
        "few": few,
        "beside": beside,
        "ratio": beside["sql_ms"] / few["sql_ms"],
        "changed_ms": statistics.median(changed),
        "history_query_ms": statistics.median(naive),
        "trigger_us": (with_trigger - without) / sample * 1e6,
        "insert_us": without / sample * 1e6,
        "fill_s": filled + with_trigger + without,
    }


def scrape_samples(bench: Bench) -> dict[str, float]:
    """Ms of a scrape (median), in SQL and through the exposition Prometheus reads."""
    from sisy_pg import metrics

    bench.db.quiesce()
    warmup = 5  # the session's first calls plan the function's statements
    server, python = [], []
    # A session of its own, as a scraper's (not the one that wrote the history).
    with psycopg.connect(bench.db.url, autocommit=True) as scraper:
        for _ in range(warmup):
            scraper.execute(SCRAPE).fetchall()
            metrics.exposition()
        for _ in range(bench.mode.metrics_repeat):
            start = time.perf_counter()
            scraper.execute(SCRAPE).fetchall()
            server.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            metrics.exposition()
            python.append((time.perf_counter() - start) * 1000)
    return {"sql_ms": statistics.median(server), "python_ms": statistics.median(python)}


def insert_runs(bench: Bench, first: int, last: int) -> float:
    """Runs first..last of the history, finished: seconds the insert took."""
    start = time.perf_counter()
    bench.db.q(
        """
        WITH ids AS (
            SELECT array_agg(id ORDER BY id) AS ids FROM sisy_task
             WHERE label LIKE 'metrics-%%'
        )
        INSERT INTO sisy_taskrun (task_id, scheduled_for, status, queued_at, started_at,
                                  finished_at, error, details)
        SELECT ids.ids[1 + n %% %(tasks)s], r.at,
               CASE WHEN n %% 10 = 0 THEN 'failed' WHEN n %% 10 = 1 THEN 'skipped'
                    ELSE 'succeeded' END,
               r.at,
               CASE WHEN n %% 10 <> 1 THEN r.at + make_interval(secs => (n %% 97) / 1000.0) END,
               r.at + make_interval(secs => (n %% 97) / 1000.0 + (n %% 13) / 10.0),
               '',
               CASE WHEN n %% 10 = 1 THEN '{"reason": "coalesced"}'::jsonb ELSE '{}' END
          FROM ids, generate_series(%(first)s::int, %(last)s::int) AS n,
               LATERAL (SELECT date_trunc('day', now()) - interval '2 days'
                               + (n / %(tasks)s) * interval '1 second' AS at) AS r
        """,
        {"first": first, "last": last, "tasks": TASKS},
    )
    return time.perf_counter() - start
