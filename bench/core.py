"""What the bench's scenarios share: its database, its workers, the figures they measure."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.modes import Mode
from bench.progress import Progress
from devtools.embedded_pg import EmbeddedPostgres
from devtools.workers import ROOT, WorkerProcess

RESULTS = ROOT / "bench" / "results"
SETTINGS = "bench.settings"
NOOP = "bench.yardstick_tasks.noop"
DJANGO_NOOP = "bench.yardstick_tasks.django_noop"


class NotMeasured(Exception):
    """A figure that cannot be measured here (the reason is reported)."""


class Database:
    """One autocommit connection of the bench, for setup and for reading results.

    One session throughout: the fetch scenario's timing loop is a function in
    its pg_temp schema.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)

    def q(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def one(self, sql: str, params: Any = None) -> Any:
        return self.q(sql, params)[0][0]

    def now(self) -> dt.datetime:
        now: dt.datetime = self.one("SELECT clock_timestamp()")
        return now

    def reset(self) -> None:
        """No tasks, no runs, no jobs: each scenario starts from the same empty state."""
        self.q("TRUNCATE sisy_task, sisy_taskrun CASCADE")
        self.q("TRUNCATE procrastinate_jobs, procrastinate_periodic_defers CASCADE")
        self.q("DELETE FROM procrastinate_workers")
        self.q("ANALYZE sisy_task, sisy_taskrun, procrastinate_jobs, procrastinate_events")

    def quiesce(self, timeout: float = 30) -> None:
        """Let the server finish what the bench's own writes left it to do (dirty buffers,
        autovacuum) before a timing, so that it does not compete for the CPU."""
        self.q("CHECKPOINT")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.one(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'autovacuum worker' OR (state = 'active' AND pid <> pg_backend_pid())"
        ):
            time.sleep(0.2)
        time.sleep(0.5)

    def close(self) -> None:
        self.conn.close()


class Workers:
    """The bench's stock workers (devtools.workers), all stopped by :meth:`stop_all`."""

    def __init__(self, db: Database, logs: Path) -> None:
        self.db = db
        self.logs = logs
        self.running: list[WorkerProcess] = []

    def start(self, name: str, concurrency: int, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            name,
            settings=SETTINGS,
            database_url=self.db.url,  # unless env says otherwise (the idle scenario's roles)
            args=("--concurrency", str(concurrency)),
            env={"PGAPPNAME": f"bench-{name}", **env},
            log_dir=self.logs,
        )
        self.running.append(worker)
        return worker

    def start_ready(self, specs: list[tuple[str, int, dict[str, str]]]) -> list[WorkerProcess]:
        """Start workers and wait until each has registered in procrastinate_workers."""
        before = self.db.one("SELECT coalesce(max(id), 0) FROM procrastinate_workers")
        workers = [self.start(name, concurrency, **env) for name, concurrency, env in specs]
        deadline = time.monotonic() + 90
        while True:
            self.check_alive(*workers)
            ready = self.db.one(
                "SELECT count(*) FROM procrastinate_workers WHERE id > %s", [before]
            )
            if ready >= len(workers):
                return workers
            if time.monotonic() > deadline:
                raise RuntimeError("workers not registered within 90 s:\n" + workers[0].tail())
            time.sleep(0.1)

    def stop(self, *workers: WorkerProcess) -> None:
        for worker in workers:
            worker.stop(timeout=30)
            with contextlib.suppress(ValueError):
                self.running.remove(worker)

    def stop_all(self) -> None:
        self.stop(*self.running[:])

    @staticmethod
    def check_alive(*workers: WorkerProcess) -> None:
        for worker in workers:
            worker.check_alive()


class Bench:
    """One run: its database and workers, and what the scenarios measured (for the report)."""

    def __init__(
        self,
        mode: Mode,
        db: Database,
        progress: Progress,
        server: EmbeddedPostgres | None,
        logs: Path,
        concurrency: int,
        parked_big: bool,
    ) -> None:
        from sisy_pg.models import task_with_callable

        self.mode = mode
        self.db = db
        self.progress = progress
        self.server = server  # the throwaway server this process started, if it did
        self.logs = logs
        self.concurrency = concurrency  # the workers' but the burst's
        self.parked_big = parked_big  # measure the parked-jobs yardstick at the big size
        self.workers = Workers(db, logs)
        self.figures: dict[str, float] = {}  # the RESULT line's, and a few more
        self.details: dict[str, Any] = {}  # what the report shows beside them
        self.problems: list[str] = []
        self.plans: list[str] = []  # the hot queries' plans, when measured
        self.callable_info = json.dumps(task_with_callable(NOOP).callable_info)

    @contextlib.contextmanager
    def attempt(self, what: str) -> Iterator[None]:
        """A failed measure is reported and the run goes on: one broken figure, not the run."""
        try:
            yield
        except Exception as exc:
            message = f"{what}: {type(exc).__name__}: {exc}"
            self.problems.append(message.splitlines()[0][:300])
            self.progress.note(f"!! {message}")
            if not isinstance(exc, NotMeasured):
                self.progress.note(traceback.format_exc())
            self.workers.stop_all()

    def sleep_until(self, instant: dt.datetime, check: list[WorkerProcess] | None = None) -> None:
        """Until ``instant`` on the database's clock, failing fast if a worker dies."""
        while True:
            remaining = (instant - self.db.now()).total_seconds()
            if remaining <= 0:
                return
            if check:
                self.workers.check_alive(*check)
            time.sleep(min(remaining, 0.5))

    def insert_defined(self, first: int, last: int, prefix: str = "defined-") -> None:
        """Tasks ``first``..``last`` by SQL: a yearly schedule each, next_run its next instant
        (spread over the coming year, none within the next 10 minutes)."""
        self.db.q(
            """
            WITH s AS (
                SELECT n, 1 + n %% 12 AS mo, 1 + (n / 12) %% 28 AS d,
                       (n / 336) %% 24 AS h, (n / 8064) %% 60 AS mi
                  FROM generate_series(%(first)s::int, %(last)s::int) AS n
            ), t AS (
                SELECT s.*, make_timestamptz(extract(year FROM now())::int, mo, d, h, mi, 0, 'UTC')
                       AS this_year
                  FROM s
            )
            INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
            SELECT %(prefix)s || n, %(info)s::jsonb, format('%%s %%s %%s %%s *', mi, h, d, mo), 'UTC',
                   CASE WHEN this_year > now() + interval '10 min' THEN this_year
                        ELSE this_year + interval '1 year' END
              FROM t
            """,
            {"first": first, "last": last, "prefix": prefix, "info": self.callable_info},
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); nan for no values; inf values count as slowest."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": percentile(ms, 0.50),
        "p95": percentile(ms, 0.95),
        "p99": percentile(ms, 0.99),
        "max": max(ms) if ms else math.nan,
    }
