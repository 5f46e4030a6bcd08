"""sisy-pg's benchmarks, each beside its yardstick, in one run, measured from the outside.

    .venv/bin/python bench/run.py --quick          # < 5 min on 2 cores
    .venv/bin/python bench/run.py                  # full mode, for the docs (~20-30 min)
    .venv/bin/python bench/run.py --smoke          # tiny sizes: checks the bench itself
    .venv/bin/python bench/run.py --quick --only lag,burst

Everything runs on a real PostgreSQL (a throwaway one from devtools.embedded_pg
unless DATABASE_URL is set; a fresh database on it either way) and real stock
``python -m django procrastinate worker`` processes (DJANGO_SETTINGS_MODULE=
bench.settings). sisy-pg is only touched through its public surfaces: the
Python API (``Task``, ``task_with_callable``), SQL on ``sisy_task``, reads of
``sisy_taskrun`` and ``sisy_task.next_run``, and procrastinate's own tables and
functions; two in-process figures use the planner (``plan``) and the named
queries (``sisy_pg.sql_files.queries()``, read at run time).

Scenarios (quick / full), each with its yardstick in the same run:

- lag: 50 tasks on ``* * * * * *`` for 30 s / 120 s, one worker
  ``--concurrency 64`` (``--concurrency`` changes it; docs/operations.md's
  advice: a slot for each run due at the busiest instant); lag =
  started_at - scheduled_for (database clock).
  Yardstick: 50 procrastinate periodic tasks on the same cron.
- enqueue: the same 50 schedules, of a Django task (``@task`` no-op on
  sisy-pg's ProcrastinateBackend, so a procrastinate job on the same worker),
  for 30 s / 120 s: lag = details.task_started_at - scheduled_for (the task's
  start), and details.enqueued_at - scheduled_for (the enqueue); every run
  must end succeeded. Beside it: the lag scenario's figures (run both).
- burst: 2,000 / 10,000 no-op tasks due at one instant T, an idle worker
  ``--concurrency 8``: max(finished_at) - T. Yardstick: as many plain
  procrastinate no-op jobs batch-deferred in one transaction: commit to the
  last 'succeeded' event.
- change: raw ``UPDATE sisy_task SET schedule`` until next_run is rewritten
  (polled every ~1 ms), 200 samples alternating a pending fire a year away and
  one under a second away (an every-second task); fires of the old schedule
  after the change must not run.
- scale: procrastinate_fetch_job_v2 of an unrelated job (timed on the server in
  a loop, each call rolled back; median) with 200,000 / 1,000,000 tasks defined
  vs none: the same database right after, sisy-pg's tables truncated (the
  bench's first and last measures are shown too).
- idle: 100,000 tasks, none due for a minute: statements/s of a worker minus
  those of a worker with SISY_PLANNER_ENABLED=False, counted exactly from the
  server's log: each worker connects as a role of its own with
  log_statement=all, and every statement it sends counts (BEGIN, COMMIT,
  psycopg_pool's empty connection checks included; not the statements run
  inside SQL functions). Needs the server this bench starts (its log).
- plan: CPU (client + server backend) of the planner's fire_due on 100 due
  tasks, rolled back, at 1,000 and at 200,000 / 1,000,000 defined tasks.
  Yardstick: procrastinate's fetch with one parked future job per task.
- rss: worker RSS with 200,000 / 1,000,000 tasks, after it ran a while.
- create: 100,000 tasks through ``Task.objects.bulk_create`` (quick: 20,000,
  extrapolated).
- plans: EXPLAIN (ANALYZE, BUFFERS) of the hot queries at the big size, and of
  the statements inside the SQL functions they call, to
  bench/results/plans-<mode>.txt.
- metrics: a whole scrape (``sisy_metrics_v1``, timed from the client, and
  ``sisy_pg.metrics.exposition()``), 100 tasks, beside 200,000 / 1,000,000
  finished runs vs 1,000 (and none); a scrape that folds 1,000 runs finished
  since the last; the trigger's cost per inserted run (the insert with it
  disabled). Yardstick: the same counters computed from the history.

Writes the table to bench/results/latest.md (and full-<date>.md in full mode);
a progress bar goes to stderr; stdout ends with one line
``RESULT lag_p50_ms=... lag_p99_ms=... enqueue_lag_p50_ms=... enqueue_lag_p99_ms=...
burst_ratio=... change_p99_ms=...
scale_fetch_ratio=... idle_queries_per_s=... plan_us_per_task=... rss_mb=...``
(``nan`` for a figure that could not be measured).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import psycopg.conninfo  # noqa: E402

from devtools import embedded_pg, processes  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SETTINGS = "bench.settings"
NOOP = "bench.yardstick_tasks.noop"
DJANGO_NOOP = "bench.yardstick_tasks.django_noop"
# The idle scenario's workers connect as roles of their own whose statements
# the server logs (log_statement=all) with the role's name, so that each
# worker's statements are counted exactly, whatever its sessions' names.
LOG_LINE_PREFIX = "%m [%p] %u %a "

# procrastinate's fetch called n times on the server, each in a subtransaction
# rolled back (the job stays to do): its duration on the server's clock.
FETCH_LOOP = """
CREATE OR REPLACE FUNCTION pg_temp.sisy_bench_fetch(p_worker bigint, p_n integer)
    RETURNS TABLE (ms float8, fetched boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz;
    job procrastinate_jobs;
BEGIN
    FOR i IN 1 .. p_n LOOP
        fetched := false;
        started := clock_timestamp();
        BEGIN
            job := procrastinate_fetch_job_v2(NULL, p_worker);
            fetched := job.id IS NOT NULL;
            RAISE EXCEPTION 'roll back' USING ERRCODE = 'SB001';
        EXCEPTION WHEN SQLSTATE 'SB001' THEN
            NULL;
        END;
        ms := extract(epoch FROM clock_timestamp() - started) * 1000;
        RETURN NEXT;
    END LOOP;
END;
$$
"""

# The metrics' yardstick: the runs by status and reason, and the lag histogram, computed
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

RESULT_KEYS = (
    "lag_p50_ms",
    "lag_p99_ms",
    "enqueue_lag_p50_ms",
    "enqueue_lag_p99_ms",
    "burst_ratio",
    "change_p99_ms",
    "scale_fetch_ratio",
    "idle_queries_per_s",
    "plan_us_per_task",
    "rss_mb",
)


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    lag_tasks: int
    lag_seconds: float
    burst: int
    change_samples: int
    idle_tasks: int
    idle_seconds: float
    big: int
    rss_settle: float
    plan_small: int
    plan_due: int
    plan_repeat: int
    fetch_repeat: int
    create: int
    parked_big: int  # the parked-jobs yardstick's big size
    warmup: float = 3.0  # seconds after the tasks are created (or the worker is up) not measured
    idle_settle: float = 5.0  # seconds after the idle workers are up not counted
    metrics_history: int = 1_000_000  # finished runs beside which scrapes are timed
    metrics_repeat: int = 100  # scrapes timed at each size


MODES = {
    "smoke": Mode(
        "smoke",
        lag_tasks=5,
        lag_seconds=2,
        burst=30,
        change_samples=10,
        idle_tasks=1000,
        idle_seconds=2,
        big=3000,
        rss_settle=1,
        plan_small=200,
        plan_due=20,
        plan_repeat=3,
        fetch_repeat=20,
        parked_big=3000,
        create=200,
        warmup=1.0,
        idle_settle=1.0,
        metrics_history=5_000,
        metrics_repeat=5,
    ),
    "quick": Mode(
        "quick",
        lag_tasks=50,
        lag_seconds=30,
        burst=2000,
        change_samples=200,
        idle_tasks=100_000,
        idle_seconds=30,
        big=200_000,
        rss_settle=15,
        plan_small=1000,
        plan_due=100,
        plan_repeat=50,
        fetch_repeat=1000,
        parked_big=100_000,
        create=20_000,
        metrics_history=200_000,
        metrics_repeat=50,
    ),
    "full": Mode(
        "full",
        lag_tasks=50,
        lag_seconds=120,
        burst=10_000,
        change_samples=200,
        idle_tasks=100_000,
        idle_seconds=60,
        big=1_000_000,
        rss_settle=30,
        plan_small=1000,
        plan_due=100,
        plan_repeat=100,
        fetch_repeat=2000,
        parked_big=1_000_000,
        create=100_000,
    ),
}
# "scale": create, idle, rss, fetch, plan, plans.
SCENARIOS = ("lag", "enqueue", "burst", "change", "scale", "metrics")


# --- progress ------------------------------------------------------------------------------


class Progress:
    """A one-line text bar on stderr: the phase, its elapsed/expected time, the whole run's."""

    def __init__(self, expected_total: float) -> None:
        self.expected_total = max(expected_total, 1.0)
        self.started = time.monotonic()
        self.done_expected = 0.0
        self.phase_name = "starting"
        self.phase_started = self.started
        self.phase_expected = 1.0
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._draw_loop, daemon=True)
        if self.tty:
            self._thread.start()

    @contextlib.contextmanager
    def phase(self, name: str, expected: float) -> Iterator[None]:
        with self._lock:
            self.phase_name, self.phase_expected = name, max(expected, 0.1)
            self.phase_started = time.monotonic()
        if not self.tty:
            print(f"[{self._clock()}] {name} (~{expected:.0f} s)...", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            took = time.monotonic() - self.phase_started
            with self._lock:
                self.done_expected += expected
            if not self.tty:
                print(f"[{self._clock()}] {name}: {took:.1f} s", file=sys.stderr, flush=True)

    def _clock(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{int(elapsed // 60)}:{int(elapsed % 60):02d}"

    def _line(self) -> str:
        now = time.monotonic()
        with self._lock:
            in_phase = now - self.phase_started
            share = (self.done_expected + min(in_phase, self.phase_expected)) / self.expected_total
            name, expected = self.phase_name, self.phase_expected
        share = min(share, 0.999)
        width = 24
        filled = int(share * width)
        bar = "#" * filled + "-" * (width - filled)
        return (
            f"\r[{bar}] {share * 100:3.0f}% {name[:38]:<38} {in_phase:5.0f}/{expected:.0f} s"
            f"  total {self._clock()} / ~{self.expected_total / 60:.0f} min "
        )

    def _draw_loop(self) -> None:
        while not self._stop.wait(0.5):
            sys.stderr.write(self._line())
            sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self.tty:
            self._thread.join(timeout=2)
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# --- database and workers --------------------------------------------------------------------


class Database:
    """One autocommit connection of the bench, for setup and for reading results."""

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

    def close(self) -> None:
        self.conn.close()


@dataclasses.dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_mb(self) -> float | None:
        import psutil

        try:
            return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20
        except psutil.Error:
            return None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system, all its threads) the worker has used so far."""
        import psutil

        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)


class Workers:
    """Stock `python -m django procrastinate worker` processes, stopped on any exit."""

    def __init__(self, db: Database, logs: Path) -> None:
        self.db = db
        self.logs = logs
        self.running: list[Worker] = []

    def start(self, name: str, concurrency: int, **env: str) -> Worker:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            process = processes.spawn(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "procrastinate",
                    "worker",
                    "--concurrency",
                    str(concurrency),
                ],
                cwd=ROOT,
                env={
                    **os.environ,
                    "DATABASE_URL": self.db.url,
                    "DJANGO_SETTINGS_MODULE": SETTINGS,
                    "PYTHONPATH": str(ROOT),
                    "PGAPPNAME": f"bench-{name}",
                    **env,
                },
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(name, process, log)
        self.running.append(worker)
        return worker

    def start_ready(self, specs: list[tuple[str, int, dict[str, str]]]) -> list[Worker]:
        """Start workers and wait until each has registered in procrastinate_workers."""
        before = self.db.one("SELECT coalesce(max(id), 0) FROM procrastinate_workers")
        workers = [self.start(name, concurrency, **env) for name, concurrency, env in specs]
        deadline = time.monotonic() + 90
        while True:
            for worker in workers:
                if worker.process.poll() is not None:
                    raise RuntimeError(
                        f"worker {worker.name} exited ({worker.process.returncode}) at start:\n"
                        f"{worker.tail()}"
                    )
            ready = self.db.one(
                "SELECT count(*) FROM procrastinate_workers WHERE id > %s", [before]
            )
            if ready >= len(workers):
                return workers
            if time.monotonic() > deadline:
                raise RuntimeError("workers not registered within 90 s:\n" + workers[0].tail())
            time.sleep(0.1)

    def stop(self, *workers: Worker) -> None:
        for worker in workers:
            processes.stop(worker.process, timeout=30)
            with contextlib.suppress(ValueError):
                self.running.remove(worker)

    def stop_all(self) -> None:
        self.stop(*self.running[:])

    def check_alive(self, *workers: Worker) -> None:
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(
                    f"worker {worker.name} died ({worker.process.returncode}):\n{worker.tail()}"
                )


# --- statistics ------------------------------------------------------------------------------


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


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}"


# --- the bench -------------------------------------------------------------------------------


class NotMeasured(Exception):
    """A figure that cannot be measured here (the reason is reported)."""


class Bench:
    def __init__(
        self,
        mode: Mode,
        options: argparse.Namespace,
        db: Database,
        progress: Progress,
        server: embedded_pg.EmbeddedPostgres | None,
    ) -> None:
        self.server = server  # the throwaway server this process started, if it did
        self.mode = mode
        self.options = options
        self.db = db
        self.progress = progress
        self.logs = Path(tempfile.mkdtemp(prefix="sisy-bench-logs-"))
        self.workers = Workers(db, self.logs)
        self.figures: dict[str, float] = {}
        self.details: dict[str, Any] = {}
        self.problems: list[str] = []
        self.plans: list[str] = []
        from sisy_pg.models import task_with_callable

        self.callable_info = json.dumps(task_with_callable(NOOP).callable_info)

    # -- helpers --

    def sleep_until(self, instant: dt.datetime, check: list[Worker] | None = None) -> None:
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

    def record_error(self, key: str, exc: BaseException) -> None:
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        message = f"{key}: {type(exc).__name__}: {exc}"
        self.problems.append(message.splitlines()[0][:300])
        self.progress.note(f"!! {message}")
        if not isinstance(exc, NotMeasured):
            self.progress.note(traceback.format_exc())
        self.workers.stop_all()

    # -- lag --

    def lag(self) -> None:
        m = self.mode
        span = m.warmup + m.lag_seconds + 3
        with self.progress.phase("lag: procrastinate periodic (yardstick)", span + 4):
            try:
                self.details["lag_periodic"] = self.lag_periodic()
            except Exception as exc:
                self.record_error("lag yardstick", exc)
        with self.progress.phase("lag: sisy-pg", span + 5):
            try:
                self.details["lag_sisy"] = self.lag_sisy()
                s = self.details["lag_sisy"]
                self.figures["lag_p50_ms"] = s["p50"]
                self.figures["lag_p99_ms"] = s["p99"]
            except Exception as exc:
                self.record_error("lag", exc)

    def lag_sisy(self) -> dict[str, Any]:
        from sisy_pg.models import Task, task_with_callable

        m = self.mode
        self.db.reset()
        (worker,) = self.workers.start_ready([("lag-sisy", self.options.concurrency, {})])
        time.sleep(1)
        created = self.db.now()
        for number in range(m.lag_tasks):
            task = task_with_callable(NOOP, label=f"lag-{number}", schedule="* * * * * *")
            task.timezone = "UTC"
            task.save()
        start = created + dt.timedelta(seconds=m.warmup)
        end = start + dt.timedelta(seconds=m.lag_seconds)
        cpu = self.window_cpu(worker, start, end)
        self.sleep_until(end + dt.timedelta(seconds=m.warmup), [worker])  # runs in flight
        Task.objects.filter(label__startswith="lag-").update(enabled=False)
        self.workers.stop(worker)
        rows = self.db.q(
            """SELECT extract(epoch FROM started_at - scheduled_for)::float8, status
                 FROM sisy_taskrun
                WHERE scheduled_for >= %s AND scheduled_for < %s""",
            [start, end],
        )
        return self._lag_summary(
            [r[0] for r in rows if r[0] is not None],
            expected=self._instants(start, end) * m.lag_tasks,
            statuses=Counter(r[1] for r in rows),
            cpu_s=cpu,
        )

    def lag_periodic(self) -> dict[str, Any]:
        m = self.mode
        self.db.reset()
        (worker,) = self.workers.start_ready(
            [("lag-periodic", self.options.concurrency, {"BENCH_PERIODIC": str(m.lag_tasks)})]
        )
        start = self.db.now() + dt.timedelta(seconds=m.warmup)
        end = start + dt.timedelta(seconds=m.lag_seconds)
        cpu = self.window_cpu(worker, start, end)
        self.sleep_until(end + dt.timedelta(seconds=m.warmup), [worker])  # runs in flight
        self.workers.stop(worker)
        rows = self.db.q(
            """SELECT extract(epoch FROM e.at)::float8 - (j.args ->> 'timestamp')::float8
                 FROM procrastinate_jobs AS j
                 JOIN procrastinate_events AS e ON e.job_id = j.id AND e.type = 'started'
                WHERE j.task_name = 'bench.periodic'
                  AND (j.args ->> 'timestamp')::float8 >= extract(epoch FROM %s::timestamptz)
                  AND (j.args ->> 'timestamp')::float8 < extract(epoch FROM %s::timestamptz)""",
            [start, end],
        )
        return self._lag_summary(
            [r[0] for r in rows], expected=self._instants(start, end) * m.lag_tasks, cpu_s=cpu
        )

    # -- enqueue --

    def enqueue(self) -> None:
        m = self.mode
        span = m.warmup + m.lag_seconds + 3
        with self.progress.phase("enqueue: sisy-pg, a Django task", span + 5):
            try:
                self.details["enqueue"] = self.enqueue_lag()
                s = self.details["enqueue"]["task_started"]
                self.figures["enqueue_lag_p50_ms"] = s["p50"]
                self.figures["enqueue_lag_p99_ms"] = s["p99"]
            except Exception as exc:
                self.record_error("enqueue", exc)

    def enqueue_lag(self) -> dict[str, Any]:
        """lag_sisy's schedules, of a Django task: each run enqueues it on sisy-pg's
        ProcrastinateBackend, the same worker runs its job, and the run follows it to its end."""
        from sisy_pg.models import Task, task_with_callable

        m = self.mode
        self.db.reset()
        (worker,) = self.workers.start_ready([("enqueue", self.options.concurrency, {})])
        time.sleep(1)
        created = self.db.now()
        for number in range(m.lag_tasks):
            task = task_with_callable(
                DJANGO_NOOP, label=f"enqueue-{number}", schedule="* * * * * *"
            )
            task.timezone = "UTC"
            task.save()
        start = created + dt.timedelta(seconds=m.warmup)
        end = start + dt.timedelta(seconds=m.lag_seconds)
        cpu = self.window_cpu(worker, start, end)
        self.sleep_until(end + dt.timedelta(seconds=m.warmup), [worker])  # tasks in flight
        Task.objects.filter(label__startswith="enqueue-").update(enabled=False)
        self.workers.stop(worker)
        rows = self.db.q(
            """SELECT extract(epoch FROM r.started_at - r.scheduled_for)::float8,
                      extract(epoch FROM (r.details ->> 'enqueued_at')::timestamptz
                                         - r.scheduled_for)::float8,
                      extract(epoch FROM (r.details ->> 'task_started_at')::timestamptz
                                         - r.scheduled_for)::float8,
                      r.status
                 FROM sisy_taskrun AS r JOIN sisy_task AS t ON t.id = r.task_id
                WHERE t.label LIKE 'enqueue-%%'
                  AND r.scheduled_for >= %s AND r.scheduled_for < %s""",
            [start, end],
        )
        expected = self._instants(start, end) * m.lag_tasks
        statuses = Counter(r[3] for r in rows)
        # Only a run that ended succeeded counts as its task started: another
        # outcome counts as infinitely late, as an instant that never ran does.
        succeeded = [r for r in rows if r[3] == "succeeded"]
        result = {
            "run_started": self._lag_summary([r[0] for r in rows if r[0] is not None], expected),
            "enqueued": self._lag_summary([r[1] for r in rows if r[1] is not None], expected),
            "task_started": self._lag_summary(
                [r[2] for r in succeeded if r[2] is not None], expected, statuses, cpu
            ),
        }
        if len(succeeded) < expected:
            self.problems.append(
                f"enqueue: {len(succeeded):,} of {expected:,} expected runs ended succeeded "
                f"(runs in the window by status: {dict(statuses)})"
            )
        return result

    @staticmethod
    def _instants(start: dt.datetime, end: dt.datetime) -> int:
        """Whole seconds in [start, end)."""
        return math.ceil(end.timestamp()) - math.ceil(start.timestamp())

    def window_cpu(self, worker: Worker, start: dt.datetime, end: dt.datetime) -> float | None:
        """The worker's CPU seconds from ``start`` to ``end`` (the database's clock)."""
        self.sleep_until(start, [worker])
        before = worker.cpu_s()
        self.sleep_until(end, [worker])
        after = worker.cpu_s()
        return None if before is None or after is None else after - before

    @staticmethod
    def _lag_summary(
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

    # -- burst --

    def burst(self) -> None:
        m = self.mode
        with self.progress.phase(f"burst: {m.burst:,} procrastinate jobs", 6 + m.burst / 500):
            try:
                self.details["burst_procrastinate"] = self.burst_procrastinate()
            except Exception as exc:
                self.record_error("burst yardstick", exc)
        with self.progress.phase(f"burst: {m.burst:,} sisy-pg runs", 8 + m.burst / 130):
            try:
                self.details["burst_sisy"] = self.burst_sisy()
            except Exception as exc:
                self.record_error("burst", exc)
        sisy = self.details.get("burst_sisy", {}).get("seconds")
        plain = self.details.get("burst_procrastinate", {}).get("seconds")
        if sisy is not None and plain:
            self.figures["burst_ratio"] = sisy / plain

    def _burst_timeout(self) -> float:
        return 60 + self.mode.burst / 20

    def burst_procrastinate(self) -> dict[str, Any]:
        from django.db import connection, transaction

        from bench.yardstick_tasks import plain_noop

        n = self.mode.burst
        self.db.reset()
        (worker,) = self.workers.start_ready([("burst-procrastinate", 8, {})])
        time.sleep(1)
        with transaction.atomic():
            plain_noop.batch_defer(*({} for _ in range(n)))
            with connection.cursor() as cursor:
                cursor.execute("SELECT clock_timestamp()")
                committed = cursor.fetchone()[0]
        deadline = time.monotonic() + self._burst_timeout()
        while True:
            done, last = self.db.q(
                """SELECT count(*), max(e.at) FROM procrastinate_events AS e
                     JOIN procrastinate_jobs AS j ON j.id = e.job_id
                    WHERE j.task_name = 'bench.noop' AND e.type IN ('succeeded', 'failed')"""
            )[0]
            if done >= n or time.monotonic() > deadline:
                break
            self.workers.check_alive(worker)
            time.sleep(0.2)
        self.workers.stop(worker)
        connection.close()
        if done < n:
            return {"seconds": math.inf, "done": done, "n": n}
        seconds = (last - committed).total_seconds()
        return {"seconds": seconds, "done": done, "n": n, "per_s": n / seconds}

    def burst_sisy(self) -> dict[str, Any]:
        n = self.mode.burst
        self.db.reset()
        (worker,) = self.workers.start_ready([("burst-sisy", 8, {})])
        time.sleep(1)
        now = self.db.now()
        instant = (now + dt.timedelta(seconds=3 + n / 4000)).replace(microsecond=0)
        instant = instant.astimezone(dt.timezone.utc)
        # sisy's sixth field is the second (croniter's order).
        cron = f"{instant.minute} {instant.hour} {instant.day} {instant.month} * {instant.second}"
        self.db.q(
            """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
               SELECT 'burst-' || n, %s::jsonb, %s, 'UTC', %s FROM generate_series(1, %s) AS n""",
            [self.callable_info, cron, instant, n],
        )
        inserted = self.db.now()
        if inserted >= instant:
            raise RuntimeError("inserting the burst took longer than its lead: raise it")
        deadline = time.monotonic() + self._burst_timeout() + (instant - now).total_seconds()
        while True:
            done, last = self.db.q(
                """SELECT count(*) FILTER (WHERE status NOT IN ('queued', 'running')),
                          max(finished_at)
                     FROM sisy_taskrun WHERE scheduled_for = %s""",
                [instant],
            )[0]
            if done >= n or time.monotonic() > deadline:
                break
            self.workers.check_alive(worker)
            broken = self.db.q("SELECT error FROM sisy_task WHERE error <> '' LIMIT 1")
            if broken:
                raise RuntimeError(f"a burst task is broken: {broken[0][0]}")
            time.sleep(0.2)
        self.workers.stop(worker)
        statuses = dict(
            self.db.q(
                "SELECT status, count(*) FROM sisy_taskrun WHERE scheduled_for = %s GROUP BY 1",
                [instant],
            )
        )
        first_start = self.db.one(
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

    # -- change --

    def change(self) -> None:
        m = self.mode
        with self.progress.phase(
            f"change: {m.change_samples} schedule changes", 8 + m.change_samples * 0.17
        ):
            try:
                self.details["change"] = self.change_samples()
                self.figures["change_p99_ms"] = self.details["change"]["all"]["p99"]
            except Exception as exc:
                self.record_error("change", exc)

    def change_samples(self) -> dict[str, Any]:
        from croniter import croniter

        from sisy_pg.models import task_with_callable

        self.db.reset()
        (worker,) = self.workers.start_ready([("change", self.options.concurrency, {})])
        task = task_with_callable(NOOP, label="change", schedule="0 0 1 1 *")
        task.timezone = "UTC"
        task.save()
        task_id = task.pk
        poll = psycopg.connect(self.db.url, autocommit=True)
        writer = psycopg.connect(self.db.url, autocommit=True)
        samples: dict[str, list[float]] = {"far → near": [], "near → far": []}
        changes: list[tuple[dt.datetime, str]] = []  # (commit time, what the schedule became)
        timeouts = 0
        near = False
        try:
            for number in range(self.mode.change_samples):
                if near:
                    kind = "near → far"
                    schedule = f"{number % 60} {(number // 60) % 24} 1 1 *"
                else:
                    kind = "far → near"
                    schedule = "* * * * * *"
                time.sleep(random.uniform(0.05, 0.25))
                if number % 20 == 0:
                    self.workers.check_alive(worker)
                start = time.perf_counter()
                (committed_at,) = writer.execute(
                    "UPDATE sisy_task SET schedule = %s WHERE id = %s RETURNING clock_timestamp()",
                    [schedule, task_id],
                ).fetchone()
                if near:
                    base = committed_at.astimezone(dt.timezone.utc)
                    expected = croniter(schedule, base).get_next(dt.datetime)
                    done = lambda next_run, expected=expected: next_run == expected  # noqa: E731
                else:
                    limit = committed_at + dt.timedelta(seconds=2)
                    done = lambda next_run, limit=limit: (  # noqa: E731
                        next_run is not None and next_run <= limit
                    )
                while True:
                    (next_run,) = poll.execute(
                        "SELECT next_run FROM sisy_task WHERE id = %s", [task_id], prepare=True
                    ).fetchone()
                    elapsed = time.perf_counter() - start
                    if done(next_run):
                        samples[kind].append(elapsed)
                        break
                    if elapsed > 5:
                        samples[kind].append(math.inf)
                        timeouts += 1
                        break
                    time.sleep(0.001)
                changes.append((committed_at, kind))
                near = not near
            # The last change: let what the old schedule had queued play out.
            time.sleep(1.5)
        finally:
            poll.close()
            writer.close()
            self.workers.stop(worker)
        # Fires of an every-second schedule after a change that made it yearly:
        # a run queued before the change (claimed ahead) must never start.
        windows = [
            (at, changes[i + 1][0] if i + 1 < len(changes) else None)
            for i, (at, kind) in enumerate(changes)
            if kind == "near → far"
        ]
        queued_at_change = ran_after_change = 0
        for start_at, end_at in windows:
            rows = self.db.q(
                """SELECT status, started_at FROM sisy_taskrun
                    WHERE task_id = %s AND scheduled_for > %s
                      AND (%s::timestamptz IS NULL OR scheduled_for < %s)""",
                [task_id, start_at, end_at, end_at],
            )
            queued_at_change += len(rows)
            ran_after_change += sum(1 for status, started in rows if started is not None)
        all_samples = [s for values in samples.values() for s in values]
        return {
            "all": summary_ms(all_samples),
            **{kind: summary_ms(values) for kind, values in samples.items()},
            "timeouts": timeouts,
            "fires_after_change": queued_at_change,
            "fires_after_change_ran": ran_after_change,
            "changes_to_far": len(windows),
        }

    # -- scale: create, idle, rss, fetch, plan, plans --

    def scale(self) -> None:
        m = self.mode
        fetch: dict[str, float] = {}
        none_samples: list[float] = []
        plan: dict[str, dict[str, float]] = {}
        parked: dict[int, float] = {}
        self.db.reset()
        with self.progress.phase("scale: fetch and planning, no tasks", 5):
            try:
                samples = self.fetch_samples()
                none_samples += samples
                fetch["none_start"] = statistics.median(samples)
            except Exception as exc:
                self.record_error("fetch (no tasks)", exc)
            try:
                self.insert_defined(1, m.plan_small - m.plan_due)
                plan["small"] = self.plan_cost(m.plan_small)
            except Exception as exc:
                self.record_error("plan (small)", exc)
            try:
                parked[m.plan_small] = self.parked_fetch(m.plan_small)
            except Exception as exc:
                self.record_error("parked jobs (small)", exc)
        self.db.reset()
        with self.progress.phase(
            f"create: {m.create:,} tasks via bulk_create", 3 + m.create / 1500
        ):
            try:
                self.details["create"] = self.create_bulk()
            except Exception as exc:
                self.record_error("create", exc)
        self.db.reset()
        with self.progress.phase(
            f"idle: {m.idle_tasks:,} tasks, {m.idle_seconds:g} s",
            12 + m.idle_tasks / 20000 + m.idle_seconds,
        ):
            try:
                self.insert_defined(1, m.idle_tasks)
                self.db.q("ANALYZE sisy_task")
                self.details["idle"] = self.idle()
                self.figures["idle_queries_per_s"] = self.details["idle"]["difference"]
            except Exception as exc:
                self.record_error("idle", exc)
        with self.progress.phase(
            f"rss: {m.big:,} tasks", 8 + (m.big - m.idle_tasks) / 20000 + m.rss_settle
        ):
            try:
                # The idle scenario's tasks stay; add up to the big size.
                have = self.db.one("SELECT count(*) FROM sisy_task")
                if have < m.idle_tasks:
                    self.db.reset()
                    have = 0
                self.insert_defined(have + 1, m.big)
                self.db.q("ANALYZE sisy_task")
                self.details["rss"] = self.rss()
                self.figures["rss_mb"] = self.details["rss"]["sisy"]
            except Exception as exc:
                self.record_error("rss", exc)
        with self.progress.phase(f"scale: fetch and planning, {m.big:,} tasks", 10):
            try:
                if self.db.one("SELECT count(*) FROM sisy_task") < m.big:
                    self.db.reset()
                    self.insert_defined(1, m.big)
                # Vacuumed now, so that autovacuum after the inserts does not
                # compete for the CPU while the fetch is timed.
                self.db.q("VACUUM (ANALYZE) sisy_task, sisy_taskrun, procrastinate_jobs")
                fetch["big"] = statistics.median(self.fetch_samples())
            except Exception as exc:
                self.record_error("fetch (big)", exc)
            try:
                plan["big"] = self.plan_cost(m.big)
            except Exception as exc:
                self.record_error("plan (big)", exc)
            try:
                self.explain_hot_queries()
            except Exception as exc:
                self.record_error("plans", exc)
            try:
                # The yardstick beside it: the same database, the same
                # procrastinate tables, only sisy-pg's tables emptied. (Measured
                # at the start and the end instead, after other scenarios had
                # changed procrastinate's tables, it drifted by half.)
                self.db.q("TRUNCATE sisy_task, sisy_taskrun CASCADE")
                self.db.q("VACUUM (ANALYZE) sisy_task, sisy_taskrun")
                fetch["none_beside"] = statistics.median(self.fetch_samples())
            except Exception as exc:
                self.record_error("fetch (no tasks, beside)", exc)
        self.db.reset()
        with self.progress.phase("scale: fetch, no tasks again", 2):
            # The baseline again, at the end: drift of the machine's load cancels.
            try:
                samples = self.fetch_samples()
                none_samples += samples
                fetch["none_end"] = statistics.median(samples)
            except Exception as exc:
                self.record_error("fetch (no tasks, again)", exc)
        if none_samples:
            fetch["none"] = statistics.median(none_samples)
        if not self.options.no_parked:
            with self.progress.phase(
                f"yardstick: {m.parked_big:,} parked jobs", 3 + m.parked_big / 10000
            ):
                try:
                    parked[m.parked_big] = self.parked_fetch(m.parked_big)
                except Exception as exc:
                    self.record_error("parked jobs (big)", exc)
        self.details["fetch"] = fetch
        self.details["plan"] = plan
        self.details["parked"] = parked
        if "none_beside" in fetch and "big" in fetch:
            self.figures["scale_fetch_ratio"] = fetch["big"] / fetch["none_beside"]
        if "big" in plan:
            self.figures["plan_us_per_task"] = plan["big"]["cpu_us"]

    def fetch_samples(self) -> list[float]:
        """Ms of procrastinate_fetch_job_v2 (all queues) fetching one unrelated job, timed on
        the server's clock, each call in a subtransaction that is rolled back; after 50 of
        warm-up. (Timed by the client, a round trip on a loaded 2-core machine varied 2x
        between two runs on the same empty table.)"""
        self.db.q(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'unrelated', 'bench.unrelated', '{}' "
            "WHERE NOT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE task_name = 'bench.unrelated')"
        )
        # Vacuumed each time: the visibility map and hint bits, not the state
        # left by the previous step, decide the fetch's cost.
        self.db.q(
            "VACUUM (ANALYZE) procrastinate_jobs, procrastinate_events, procrastinate_workers"
        )
        self.db.q(FETCH_LOOP)
        self.quiesce()
        worker_id = self.db.one("SELECT procrastinate_register_worker_v1()")
        try:
            rows = self.db.q(
                "SELECT ms, fetched FROM pg_temp.sisy_bench_fetch(%s, %s)",
                [worker_id, 50 + self.mode.fetch_repeat],
            )
        finally:
            self.db.q("SELECT procrastinate_unregister_worker_v1(%s)", [worker_id])
        if not all(fetched for _, fetched in rows):
            raise RuntimeError("procrastinate_fetch_job_v2 fetched nothing")
        return [ms for ms, _ in rows[50:]]

    def quiesce(self, timeout: float = 30) -> None:
        """Let the server finish what the bench's own writes left it to do (dirty buffers,
        autovacuum) before a timing, so that it does not compete for the CPU."""
        self.db.q("CHECKPOINT")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.db.one(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'autovacuum worker' OR (state = 'active' AND pid <> pg_backend_pid())"
        ):
            time.sleep(0.2)
        time.sleep(0.5)

    def parked_fetch(self, size: int) -> float:
        """The yardstick design: one parked future procrastinate job per task, some due."""
        # Emptied (not analyzed) first, on a session of its own: the foreign-key
        # checks of the events the insert writes are planned for a table of
        # unknown size (an index scan), not for the one row it had (a sequential
        # scan per event: quadratic).
        self.db.q("TRUNCATE procrastinate_jobs CASCADE")
        with psycopg.connect(self.db.url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
               SELECT 'parked', 'bench.parked', '{}', now() + interval '1 day' + n * interval '1 s'
                 FROM generate_series(1, %s) AS n""",
                [size],
            )
        result = statistics.median(self.fetch_samples())
        self.db.q("TRUNCATE procrastinate_jobs CASCADE")
        return result

    def plan_cost(self, defined: int) -> dict[str, float]:
        """The planner's fire_due on ``plan_due`` due tasks among ``defined``, rolled back:
        wall time (median) and CPU (this process + the server backend) per task."""
        import asyncio

        from psycopg.rows import dict_row

        due = self.mode.plan_due
        try:
            make_planner, options = _planner_factory()
        except Exception as exc:
            raise NotMeasured(f"the planner's API changed: {exc!r}") from exc
        self.db.q(
            """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
               SELECT 'due-' || n, %s::jsonb, '* * * * *', 'UTC', now() - interval '1 ms'
                 FROM generate_series(1, %s) AS n""",
            [self.callable_info, due],
        )
        self.db.q("VACUUM (ANALYZE) sisy_task, sisy_taskrun")
        self.quiesce()

        async def measure() -> dict[str, float]:
            planner = make_planner(options)
            walls: list[float] = []
            async with await psycopg.AsyncConnection.connect(
                self.db.url, autocommit=True, row_factory=dict_row
            ) as conn:
                backend = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())[
                    "pid"
                ]
                fired = 0
                async with conn.transaction(force_rollback=True):  # warm-up
                    fired = await planner.fire_due(conn)
                if fired != due:
                    raise RuntimeError(f"fire_due fired {fired} of {due} due tasks")
                cpu_start, server_start = time.process_time(), backend_cpu(backend)
                for _ in range(self.mode.plan_repeat):
                    async with conn.transaction(force_rollback=True):
                        start = time.perf_counter()
                        await planner.fire_due(conn)
                        walls.append(time.perf_counter() - start)
                client = time.process_time() - cpu_start
                server_end = backend_cpu(backend)
            calls = self.mode.plan_repeat * due
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
            self.db.q("DELETE FROM sisy_task WHERE label LIKE 'due-%%'")

    def create_bulk(self) -> dict[str, float]:
        from sisy_pg.models import Task, task_with_callable

        n = self.mode.create
        start = time.perf_counter()
        tasks = []
        for number in range(n):
            task = task_with_callable(
                NOOP, label=f"bulk-{number}", schedule=f"{number % 60} {number // 60 % 24} 1 1 *"
            )
            tasks.append(task)
        built = time.perf_counter()
        Task.objects.bulk_create(tasks, batch_size=1000)
        inserted = time.perf_counter()
        count = self.db.one("SELECT count(*) FROM sisy_task WHERE label LIKE 'bulk-%%'")
        if count != n:
            raise RuntimeError(f"bulk_create stored {count} of {n} tasks")
        scale = 100_000 / n
        return {
            "n": n,
            "build_s": built - start,
            "insert_s": inserted - built,
            "total_s": inserted - start,
            "per_100k_s": (inserted - start) * scale,
            "extrapolated": n != 100_000,
        }

    def idle(self) -> dict[str, Any]:
        server = self.server
        if server is None:
            raise NotMeasured(
                "statement counts come from the embedded server's log (DATABASE_URL is set)"
            )
        roles = {"sisy": "bench_idle_sisy", "plain": "bench_idle_plain"}
        for role in roles.values():
            self.db.q(f"DROP ROLE IF EXISTS {role}")
            self.db.q(f"CREATE ROLE {role} LOGIN SUPERUSER")
            self.db.q(f"ALTER ROLE {role} SET log_statement = 'all'")
        url = {
            key: psycopg.conninfo.make_conninfo(self.db.url, user=role)
            for key, role in roles.items()
        }
        try:
            sisy, plain = self.workers.start_ready(
                [
                    ("idle-sisy", self.options.concurrency, {"DATABASE_URL": url["sisy"]}),
                    (
                        "idle-plain",
                        self.options.concurrency,
                        {"DATABASE_URL": url["plain"], "SISY_PLANNER_ENABLED": "False"},
                    ),
                ]
            )
            due = self.db.one(
                "SELECT count(*) FROM sisy_task WHERE next_run < now() + interval '2 min'"
            )
            time.sleep(self.mode.idle_settle)  # start-up (the planner's first look) is not idle
            start_offset = server.log_path.stat().st_size
            started = time.monotonic()
            time.sleep(self.mode.idle_seconds)
            self.workers.check_alive(sisy, plain)
            end_offset = server.log_path.stat().st_size
            seconds = time.monotonic() - started
            self.workers.stop(sisy, plain)
        finally:
            self.workers.stop_all()
            for role in roles.values():
                with contextlib.suppress(psycopg.Error):
                    self.db.q(f"DROP ROLE IF EXISTS {role}")
        with open(server.log_path, "rb") as log:
            log.seek(start_offset)
            chunk = log.read(end_offset - start_offset).decode(errors="replace")
        (self.logs / "idle-statements.log").write_text(chunk)  # kept with --keep-logs
        counts: Counter[str] = Counter()
        heads: dict[str, Counter[str]] = {role: Counter() for role in roles.values()}
        # "%m [%p] %u %a " then the message; %a may be empty.
        pattern = re.compile(r"\[\d+\] (\S+) (?:\S* )?LOG:  (?:statement|execute [^:]*): (.*)")
        statements: list[tuple[str, list[str]]] = []  # (role, lines of the statement)
        for line in chunk.splitlines():
            match = pattern.search(line)
            if match:
                statements.append((match.group(1), [match.group(2)]))
            elif line.startswith("\t") and statements:  # a statement's next line
                statements[-1][1].append(line)
        for role, text in statements:
            if role in heads:
                counts[role] += 1
                heads[role][_statement_head(text)] += 1
        sisy_rate = counts[roles["sisy"]] / seconds
        plain_rate = counts[roles["plain"]] / seconds
        return {
            "seconds": seconds,
            "sisy": sisy_rate,
            "plain": plain_rate,
            "difference": sisy_rate - plain_rate,
            "due_within_2_min": due,
            "heads_sisy": heads[roles["sisy"]],
            "heads_plain": heads[roles["plain"]],
        }

    def rss(self) -> dict[str, float]:
        sisy, plain = self.workers.start_ready(
            [
                ("rss-sisy", self.options.concurrency, {}),
                ("rss-plain", self.options.concurrency, {"SISY_PLANNER_ENABLED": "False"}),
            ]
        )
        samples: dict[str, list[float]] = {"sisy": [], "plain": []}
        deadline = time.monotonic() + self.mode.rss_settle
        while time.monotonic() < deadline:
            time.sleep(1)
            self.workers.check_alive(sisy, plain)
            for key, worker in (("sisy", sisy), ("plain", plain)):
                value = worker.rss_mb()
                if value is not None:
                    samples[key].append(value)
        unplanned = self.db.one("SELECT count(*) FROM sisy_task WHERE enabled AND next_run IS NULL")
        self.workers.stop(sisy, plain)
        return {
            "sisy": max(samples["sisy"], default=math.nan),
            "plain": max(samples["plain"], default=math.nan),
            "defined": self.db.one("SELECT count(*) FROM sisy_task"),
            "unplanned": unplanned,
            "seconds": self.mode.rss_settle,
        }

    # -- plans --

    def explain_hot_queries(self) -> None:
        from sisy_pg import sql_files

        queries = sql_files.queries()
        params = {
            "limit": self.mode.plan_due,
            "lead": dt.timedelta(seconds=0.2),
            "stalled_after": dt.timedelta(seconds=30),
        }
        defined = self.db.one("SELECT count(*) FROM sisy_task")
        # A run history, so that the plans are those of a table in use.
        history = min(defined, 50_000)
        self.db.q(
            """INSERT INTO sisy_taskrun (task_id, scheduled_for, status, queued_at, started_at,
                                       finished_at)
               SELECT id, now() - interval '1 day', 'succeeded', now() - interval '1 day',
                      now() - interval '1 day', now() - interval '1 day'
                 FROM sisy_task ORDER BY id LIMIT %s""",
            [history],
        )
        self.db.q("ANALYZE sisy_task, sisy_taskrun")
        try:
            self._explain_hot_queries(queries, params, defined, history)
        finally:
            self.db.q("TRUNCATE sisy_taskrun")

    def _explain_hot_queries(
        self, queries: dict[str, str], params: dict[str, Any], defined: int, history: int
    ) -> None:
        out = [
            (
                f"EXPLAIN (ANALYZE, BUFFERS) of sisy-pg's hot queries, {defined:,} tasks defined "
                f"({self.mode.plan_due} due, {self.mode.plan_due} waiting to be planned, "
                f"{history:,} finished runs in the history), "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"PostgreSQL {self.db.one('SHOW server_version')}."
            ),
            (
                "Each runs in a transaction that is rolled back. Statements inside the SQL "
                "functions a query calls are shown after it (auto_explain when the server has it, "
                "else the body of a LANGUAGE sql function with its arguments substituted)."
            ),
            "",
        ]
        seq_scans: list[str] = []
        auto_explain = self._auto_explain_available()
        conn = psycopg.connect(self.db.url, autocommit=True)
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        try:
            for name in ("claim_due", "planner_state", "tasks_to_plan", "start_runs", "finish_run"):
                sql = queries.get(name)
                if sql is None:
                    out += [f"== {name}: not in queries.sql any more", ""]
                    continue
                body = _strip_comments(sql)
                with conn.transaction(force_rollback=True):
                    self._make_due_and_pending(conn)
                    params = {**params, **self._runner_params(conn, name, queries)}
                    if auto_explain:
                        conn.execute("LOAD 'auto_explain'")
                        for setting, value in (
                            ("auto_explain.log_min_duration", "0"),
                            ("auto_explain.log_analyze", "on"),
                            ("auto_explain.log_buffers", "on"),
                            ("auto_explain.log_nested_statements", "on"),
                            ("auto_explain.log_level", "notice"),
                            ("client_min_messages", "notice"),
                        ):
                            conn.execute(f"SET LOCAL {setting} = {value}")
                    notices.clear()
                    cursor = psycopg.ClientCursor(conn)
                    cursor.execute(
                        "EXPLAIN (ANALYZE, BUFFERS) " + body, params if "%(" in body else None
                    )
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                    inner = self._inner_plans(conn, body, params) if not auto_explain else []
                    nested = [
                        n
                        for n in notices
                        if ("Query Text" in n or "Scan" in n) and "Query Text: EXPLAIN" not in n
                    ]
                out += [f"== {name}", body, "", plan, ""]
                for text in [*nested, *inner]:
                    out += ["-- inside:", text, ""]
                for text in [plan, *nested, *inner]:
                    if re.search(r"Seq Scan on (sisy_task|sisy_taskrun)\b", text):
                        seq_scans.append(name)
        finally:
            conn.close()
        self.details["seq_scans"] = sorted(set(seq_scans))
        self.details["auto_explain"] = auto_explain
        self.plans = out

    def _auto_explain_available(self) -> bool:
        try:
            with psycopg.connect(self.db.url, autocommit=True) as conn:
                conn.execute("LOAD 'auto_explain'")
            return True
        except psycopg.Error:
            return False

    def _runner_params(
        self, conn: psycopg.Connection[Any], name: str, queries: dict[str, str]
    ) -> dict[str, Any]:
        """For the runner's statements: a job's worth of queued runs (started, for finish_run)."""
        if name not in ("start_runs", "finish_run"):
            return {}
        run_ids = [
            row[0]
            for row in conn.execute(
                """INSERT INTO sisy_taskrun (task_id, scheduled_for, status)
                   SELECT id, now() - interval '1 ms', 'queued' FROM sisy_task
                    WHERE label LIKE 'explain-due-%%' ORDER BY id LIMIT 10
                   RETURNING id"""
            ).fetchall()
        ]
        start = {
            "run_ids": run_ids,
            "job_id": None,
            "worker": "bench",
            "stalled_after": dt.timedelta(seconds=30),
            "default_grace": dt.timedelta(seconds=60),
        }
        if name == "start_runs":
            return start
        conn.execute(queries["start_runs"], start)
        return {
            "run_id": run_ids[0],
            "status": "succeeded",
            "error": "",
            "traceback": "",
            "queue": "sisy",
            "task_name": "sisy.run",
        }

    def _make_due_and_pending(self, conn: psycopg.Connection[Any]) -> None:
        """Inside the EXPLAIN's transaction: tasks waiting to be planned (rolled back)."""
        conn.execute(
            """INSERT INTO sisy_task (label, callable_info, schedule, timezone)
               SELECT 'explain-pending-' || n, %s::jsonb, '* * * * *', 'UTC'
                 FROM generate_series(1, %s) AS n""",
            [self.callable_info, self.mode.plan_due],
        )
        conn.execute(
            """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
               SELECT 'explain-due-' || n, %s::jsonb, '* * * * *', 'UTC', now() - interval '1 ms'
                 FROM generate_series(1, %s) AS n""",
            [self.callable_info, self.mode.plan_due],
        )

    def _inner_plans(
        self, conn: psycopg.Connection[Any], body: str, params: dict[str, Any]
    ) -> list[str]:
        """EXPLAIN the body of each LANGUAGE sql function the query calls, arguments in place."""
        results = []
        for call in re.finditer(r"\b(sisy_\w+)\s*\(", body):
            function = call.group(1)
            args_text = _call_arguments(body, call.end())
            rows = conn.execute(
                """SELECT l.lanname, p.prosrc, p.proargnames
                     FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
                    WHERE p.proname = %s""",
                [function],
            ).fetchall()
            if not rows:
                continue
            language, source, arg_names = rows[0]
            if language != "sql":
                results.append(
                    f"{function} is LANGUAGE {language}: its statements' plans need auto_explain "
                    "(run with SISY_PG_BINDIR pointing at a PostgreSQL that has it)"
                )
                continue
            literals = [
                psycopg.ClientCursor(conn).mogrify(arg, params).strip()
                for arg in _split_arguments(args_text)
            ]
            statement = _strip_comments(source).strip().rstrip(";")
            for index, name in enumerate(arg_names or []):
                if index < len(literals):
                    statement = re.sub(rf"\b{re.escape(name)}\b", f"({literals[index]})", statement)
            for index in reversed(range(len(literals))):
                statement = statement.replace(f"${index + 1}", f"({literals[index]})")
            if ";" in statement:
                results.append(f"{function}: several statements, not explained by hand")
                continue
            with conn.transaction(force_rollback=True):
                plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement).fetchall()
            results.append(
                f"{function}({', '.join(literals)}), its body:\n"
                + statement
                + "\n\n"
                + "\n".join(row[0] for row in plan)
            )
        return results

    # -- metrics --

    def metrics(self) -> None:
        m = self.mode
        with self.progress.phase(
            f"metrics: scrapes beside {m.metrics_history:,} runs of history",
            5 + m.metrics_history / 35000,
        ):
            try:
                self.details["metrics"] = self.metrics_cost()
                self.figures["metrics_scrape_ratio"] = self.details["metrics"]["ratio"]
            except Exception as exc:
                self.record_error("metrics", exc)

    def metrics_cost(self) -> dict[str, Any]:
        """sisy_metrics_v1 (every sample of a scrape, one statement) timed from the bench's
        client and through ``sisy_pg.metrics.exposition()``, with no history, with 10 runs a task, then
        beside ``metrics_history`` finished runs (each counted by the trigger as it was inserted);
        then a scrape that folds 1,000 runs finished since the last one. Yardstick: the same
        counts (runs by status and reason, the lag histogram) computed from the history. And
        what the trigger costs an inserted run: the same insert with it disabled."""
        from sisy_pg import metrics

        m = self.mode
        tasks = 100
        self.db.reset()
        self.insert_defined(1, tasks, prefix="metrics-")
        # Each size is measured as a scraped cluster runs: what finished is folded, and
        # autovacuum has given back the space of the rows folded (here, at once).
        settle = "VACUUM (ANALYZE) sisy_taskrun, sisy_metric_delta, sisy_metric_total"
        self.db.q("SELECT count(*) FROM sisy_metrics_v1()")  # folds what earlier scenarios left
        self.db.q(settle)

        def scrape_samples() -> dict[str, float]:
            self.quiesce()
            warmup = 5  # the session's first calls plan the function's statements
            server, python = [], []
            # A session of its own, as a scraper's (not the one that wrote the history).
            with psycopg.connect(self.db.url, autocommit=True) as scraper:
                for _ in range(warmup):
                    scraper.execute("SELECT count(*) FROM sisy_metrics_v1()").fetchall()
                    metrics.exposition()
                for _ in range(m.metrics_repeat):
                    start = time.perf_counter()
                    scraper.execute("SELECT count(*) FROM sisy_metrics_v1()").fetchall()
                    server.append((time.perf_counter() - start) * 1000)
                    start = time.perf_counter()
                    metrics.exposition()
                    python.append((time.perf_counter() - start) * 1000)
            return {"sql_ms": statistics.median(server), "python_ms": statistics.median(python)}

        empty = scrape_samples()

        def insert_runs(first: int, last: int) -> float:
            """Runs first..last of the history, finished: seconds the insert took."""
            start = time.perf_counter()
            self.db.q(
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
                {"first": first, "last": last, "tasks": tasks},
            )
            return time.perf_counter() - start

        # A small history: each task's latest outcome is then an index lookup (with none,
        # it finds nothing at once).
        small = 10 * tasks
        insert_runs(1, small)
        self.db.q("SELECT count(*) FROM sisy_metrics_v1()")
        self.db.q(settle)
        few = scrape_samples()

        # What the trigger costs an insert of finished runs: the same insert without it.
        sample = min(20_000, m.metrics_history // 4)
        triggers = ("sisy_taskrun_metrics_insert_v1",)
        for name in triggers:
            self.db.q(f"ALTER TABLE sisy_taskrun DISABLE TRIGGER {name}")
        try:
            without = insert_runs(small + 1, small + sample)
        finally:
            for name in triggers:
                self.db.q(f"ALTER TABLE sisy_taskrun ENABLE TRIGGER {name}")
        with_trigger = insert_runs(small + sample + 1, small + 2 * sample)
        filled = insert_runs(small + 2 * sample + 1, m.metrics_history)
        history = self.db.one("SELECT count(*) FROM sisy_taskrun")
        self.db.q("SELECT count(*) FROM sisy_metrics_v1()")  # folds what the inserts left
        self.db.q(settle)
        beside = scrape_samples()

        # A scrape after 1,000 more runs finished: what changed is folded, then read.
        changed = []
        with psycopg.connect(self.db.url, autocommit=True) as scraper:
            for round_ in range(5):
                first = m.metrics_history + round_ * 1000 + 1
                insert_runs(first, first + 999)
                start = time.perf_counter()
                scraper.execute("SELECT count(*) FROM sisy_metrics_v1()").fetchall()
                changed.append((time.perf_counter() - start) * 1000)

        # The yardstick: the same counters computed from the history itself.
        naive = []
        for _ in range(3):
            start = time.perf_counter()
            self.db.q(HISTORY_METRICS)
            naive.append((time.perf_counter() - start) * 1000)
        return {
            "history": history,
            "tasks": tasks,
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


def _planner_factory() -> tuple[Callable[[Any], Any], Any]:
    """sisy's planner as a worker would make it (its options' fields may change)."""
    import inspect

    from sisy_pg import procrastinate_seam, worker

    known = {"queues": None, "stalled_worker_timeout": 30.0, "concurrency": 8}
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


def _statement_head(lines: list[str]) -> str:
    """The first line of a statement that says something (a named query's comment names it)."""
    for line in lines:
        text = re.sub(r"\s+", " ", line).strip()
        if text:
            return re.sub(r"\$\d+|'[^']*'|\b\d+\b", "?", text)[:70]
    return "(empty query: psycopg_pool's connection check)"


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--")).strip()


def _call_arguments(text: str, start: int) -> str:
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return text[start:]


def _split_arguments(text: str) -> list[str]:
    args, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            args.append(current.strip())
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    if current.strip():
        args.append(current.strip())
    return args


# --- the report ------------------------------------------------------------------------------


def machine_and_versions(db: Database) -> dict[str, str]:
    from importlib.metadata import version

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sisy_pg", "sql"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in sisy_pg/ or sql/"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {ram} RAM, {cpu}, {platform.system()} {platform.release()}",
        "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "django": version("django"),
        "procrastinate": version("procrastinate"),
        "psycopg": version("psycopg"),
        "postgresql": db.one("SHOW server_version"),
        "commit": commit,
    }


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def check(value: float | None, test: Callable[[float], bool]) -> bool | None:
    if value is None or math.isnan(value):
        return None
    return test(value)


def report(bench: Bench, info: dict[str, str], load_end: str, took: float) -> str:
    m, d, f = bench.mode, bench.details, bench.figures
    c = bench.options.concurrency
    chosen = {name.strip() for name in bench.options.only.split(",")}
    only = [name for name in SCENARIOS if name in chosen]
    lag_s, lag_p = d.get("lag_sisy", {}), d.get("lag_periodic", {})
    enqueue = d.get("enqueue", {})
    enqueue_task, enqueue_put = enqueue.get("task_started", {}), enqueue.get("enqueued", {})
    burst_s, burst_p = d.get("burst_sisy", {}), d.get("burst_procrastinate", {})
    change = d.get("change", {})
    fetch, plan, parked = d.get("fetch", {}), d.get("plan", {}), d.get("parked", {})
    idle, rss, create = d.get("idle", {}), d.get("rss", {}), d.get("create", {})
    plan_small, plan_big = plan.get("small", {}), plan.get("big", {})
    plan_ratio = (
        plan_big["cpu_us"] / plan_small["cpu_us"]
        if plan_small.get("cpu_us") and plan_big.get("cpu_us")
        else math.nan
    )
    big = f"{m.big:,}"
    change_verdict = verdict(check(f.get("change_p99_ms"), lambda v: v <= 100))
    if change.get("fires_after_change_ran"):
        change_verdict = "**not met** (old fires ran)"

    def lag_cell(s: dict[str, Any]) -> str:
        if not s:
            return "n/a"
        return (
            f"p50 {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms "
            f"({s['started']:,}/{s['expected']:,} started)"
        )

    def p50_p99(s: dict[str, Any]) -> str:
        return f"p50 {fmt(s['p50'])} ms, p99 {fmt(s['p99'])} ms" if s else "n/a"

    lines = [
        f"# sisy-pg benchmarks, {m.name} mode ({info['date']})",
        "",
        f"- machine: {info['machine']}",
        (
            f"- versions: Python {info['python']}, Django {info['django']}, procrastinate "
            f"{info['procrastinate']}, psycopg {info['psycopg']}, PostgreSQL {info['postgresql']}"
        ),
        f"- sisy-pg commit: {info['commit']}",
        (
            f"- load average (1/5/15 min) at start: {info['load']}; at end: {load_end}; "
            f"the run took {took / 60:.1f} min"
        ),
        "- command: `.venv/bin/python bench/run.py"
        + ("" if m.name == "full" else f" --{m.name}")
        + (f" --concurrency {c}" if c != 64 else "")
        + (f" --only {','.join(only)}" if len(only) < len(SCENARIOS) else "")
        + "`",
        "",
        "| figure | scenario | sisy-pg | yardstick (same run) | target | verdict |",
        "|---|---|---|---|---|---|",
        (
            f"| lag_p50_ms / lag_p99_ms | {m.lag_tasks} tasks on `* * * * * *` for "
            f"{m.lag_seconds:g} s, `--concurrency {c}`; started_at - instant | {lag_cell(lag_s)} "
            f"| procrastinate periodic tasks, same cron and worker: {lag_cell(lag_p)} "
            f"| p99 ≤ 50 ms | {verdict(check(f.get('lag_p99_ms'), lambda v: v <= 50))} |"
        ),
        (
            f"| enqueue_lag_p50_ms / enqueue_lag_p99_ms | the same {m.lag_tasks} schedules of a "
            f"Django task (`@task` no-op, sisy-pg's ProcrastinateBackend, the same worker); "
            f"task_started_at - instant | "
            + (
                f"task started: {p50_p99(enqueue_task)} ({enqueue_task['started']:,}"
                f"/{enqueue_task['expected']:,} succeeded); enqueued: {p50_p99(enqueue_put)}"
                if enqueue_task
                else "n/a"
            )
            + f" | plain callable (lag above): {p50_p99(lag_s)}; "
            f"procrastinate periodic: {p50_p99(lag_p)} | — | — |"
        ),
        (
            f"| burst_ratio | {m.burst:,} no-op runs due at one instant, `--concurrency 8`: "
            f"instant → last run finished | {fmt(burst_s.get('seconds'), 2)} s "
            f"| {m.burst:,} plain procrastinate no-op jobs batch-deferred: commit → last finished "
            f"{fmt(burst_p.get('seconds'), 2)} s; ratio **{fmt(f.get('burst_ratio'), 2)}** "
            f"| ≤ 1.3 | {verdict(check(f.get('burst_ratio'), lambda v: v <= 1.3))} |"
        ),
        (
            f"| change_p99_ms | raw SQL `UPDATE sisy_task SET schedule` → next_run rewritten, "
            f"{change.get('all', {}).get('n', 0)} samples | p50 "
            f"{fmt(change.get('all', {}).get('p50'))} ms, p99 {fmt(f.get('change_p99_ms'))} ms; "
            f"fires claimed before the change that still ran: "
            f"{change.get('fires_after_change_ran', 'n/a')} of "
            f"{change.get('fires_after_change', 'n/a')} | — "
            f"| ≤ 100 ms, and no old fire runs | {change_verdict} |"
        ),
        (
            f"| scale_fetch_ratio | procrastinate_fetch_job_v2 of an unrelated job, {big} tasks "
            f"defined | {fmt(fetch.get('big'), 3)} ms | same fetch, the tasks then truncated: "
            f"{fmt(fetch.get('none_beside'), 3)} ms (at the bench's start: "
            f"{fmt(fetch.get('none_start'), 3)}, end: {fmt(fetch.get('none_end'), 3)}); "
            f"ratio **{fmt(f.get('scale_fetch_ratio'), 2)}** "
            f"| ≤ 1.1 | {verdict(check(f.get('scale_fetch_ratio'), lambda v: v <= 1.1))} |"
        ),
        (
            f"| idle_queries_per_s | {m.idle_tasks:,} tasks, none due for a minute, "
            f"{idle.get('seconds', m.idle_seconds):.0f} s: statements/s | "
            f"{fmt(idle.get('sisy'), 2)}/s; beyond the yardstick **{fmt(f.get('idle_queries_per_s'), 2)}/s** "
            f"| worker with SISY_PLANNER_ENABLED=False: {fmt(idle.get('plain'), 2)}/s "
            f"| ≤ 2 | {verdict(check(f.get('idle_queries_per_s'), lambda v: v <= 2))} |"
        ),
        (
            f"| plan_us_per_task | planner's fire_due on {m.plan_due} due tasks (rolled back), "
            f"CPU per task | {big} defined: **{fmt(plan_big.get('cpu_us'))} µs**; "
            f"{m.plan_small:,} defined: {fmt(plan_small.get('cpu_us'))} µs; "
            f"ratio {fmt(plan_ratio, 2)} | procrastinate fetch with one parked job per task: "
            f"{m.plan_small:,}: {fmt(parked.get(m.plan_small), 3)} ms, {m.parked_big:,}: "
            f"{fmt(parked.get(m.parked_big), 3)} ms "
            f"| flat: big ≤ 1.5x small | {verdict(check(plan_ratio, lambda v: v <= 1.5))} |"
        ),
        (
            f"| rss_mb | worker RSS, {big} tasks defined, after {rss.get('seconds', m.rss_settle):g} s "
            f"| {fmt(f.get('rss_mb'))} MB | worker with SISY_PLANNER_ENABLED=False: "
            f"{fmt(rss.get('plain'))} MB | ≤ 150 MB "
            f"| {verdict(check(f.get('rss_mb'), lambda v: v <= 150))} |"
        ),
    ]
    if "metrics" in only:
        mx = d.get("metrics", {})
        empty, few, beside = mx.get("empty", {}), mx.get("few", {}), mx.get("beside", {})
        lines.append(
            f"| metrics_scrape_ratio | a whole scrape (`SELECT * FROM sisy_metrics_v1()`, one "
            f"statement, timed by a client of its own; median of {m.metrics_repeat}), "
            f"{mx.get('tasks', 100)} tasks, "
            f"{mx.get('history', m.metrics_history):,} finished runs in the history "
            f"| {fmt(beside.get('sql_ms'), 3)} ms (`sisy_pg.metrics.exposition()`, the text "
            f"Prometheus gets: {fmt(beside.get('python_ms'), 2)} ms) "
            f"| {mx.get('small', 0):,} runs: {fmt(few.get('sql_ms'), 3)} ms (exposition "
            f"{fmt(few.get('python_ms'), 2)} ms); ratio **{fmt(f.get('metrics_scrape_ratio'), 2)}**; "
            f"no run at all: {fmt(empty.get('sql_ms'), 3)} ms; the same counters computed "
            f"from the history: {fmt(mx.get('history_query_ms'), 1)} ms "
            f"| ≤ 1.5 | {verdict(check(f.get('metrics_scrape_ratio'), lambda v: v <= 1.5))} |"
        )
    lines += ["", "## Details", ""]
    if lag_s or lag_p or enqueue_task:
        lines += [
            (
                "Lag (ms; an expected instant that did not start counts as ∞, and so does a "
                "Django task's run that did not end succeeded):"
            ),
            "",
            "| system | started / expected | p50 | p95 | p99 | max | worker CPU per run |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in (
            ("sisy-pg", lag_s),
            ("procrastinate periodic", lag_p),
            ("sisy-pg, Django task: run started", enqueue.get("run_started", {})),
            ("sisy-pg, Django task: enqueued", enqueue_put),
            ("sisy-pg, Django task: task started (run succeeded)", enqueue_task),
        ):
            if s:
                cpu = s.get("cpu_ms")
                lines.append(
                    f"| {name} | {s['started']:,} / {s['expected']:,} | {fmt(s['p50'])} "
                    f"| {fmt(s['p95'])} | {fmt(s['p99'])} | {fmt(s['max'])} "
                    f"| {'—' if cpu is None else fmt(cpu, 2) + ' ms'} |"
                )
        if lag_s.get("statuses"):
            lines.append(f"\nsisy-pg runs in the window by status: {lag_s['statuses']}")
        if enqueue_task.get("statuses"):
            lines.append(
                f"\nsisy-pg runs of the Django task in the window by status: "
                f"{enqueue_task['statuses']}"
            )
        lines.append("")
    if burst_s or burst_p:
        lines += [
            "Burst:",
            "",
            (
                f"- sisy-pg: {fmt(burst_s.get('seconds'), 2)} s "
                f"({fmt(burst_s.get('per_s'), 0)} runs/s; first run started "
                f"{fmt(burst_s.get('first_start_ms'))} ms after the instant; statuses "
                f"{burst_s.get('statuses', {})}; tasks inserted {fmt(burst_s.get('lead_s'), 1)} s "
                "before the instant)"
            ),
            (
                f"- procrastinate: {fmt(burst_p.get('seconds'), 2)} s "
                f"({fmt(burst_p.get('per_s'), 0)} jobs/s)"
            ),
            "",
        ]
    if change:
        lines += [
            "Schedule changes (ms from sending the UPDATE until the new next_run is read):",
            "",
            "| change | samples | p50 | p95 | p99 | max |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for kind in ("far → near", "near → far", "all"):
            s = change.get(kind, {})
            if s:
                lines.append(
                    f"| {kind} | {s['n']} | {fmt(s['p50'])} | {fmt(s['p95'])} "
                    f"| {fmt(s['p99'])} | {fmt(s['max'])} |"
                )
        lines += [
            "",
            (
                f"Fires of the every-second schedule already claimed when it became yearly: "
                f"{change.get('fires_after_change', 0)} over {change.get('changes_to_far', 0)} "
                f"changes; of them started anyway: {change.get('fires_after_change_ran', 0)} "
                f"(must be 0). Timeouts (> 5 s): {change.get('timeouts', 0)}."
            ),
            "",
        ]
    if plan:
        lines += [
            f"Planning {m.plan_due} due tasks (fire_due, rolled back; µs per task):",
            "",
            "| defined tasks | wall (median) | CPU bench process | CPU server backend | CPU total |",
            "|---:|---:|---:|---:|---:|",
        ]
        for s in (plan_small, plan_big):
            if s:
                lines.append(
                    f"| {s['defined']:,} | {fmt(s['wall_us'])} | {fmt(s['client_us'])} "
                    f"| {fmt(s['server_us'])} | {fmt(s['cpu_us'])} |"
                )
        lines.append("")
    if idle:
        lines += [
            (
                f"Idle statements in {idle['seconds']:.1f} s (tasks due within 2 min: "
                f"{idle['due_within_2_min']}), by statement:"
            ),
            "",
            "| statement | sisy-pg worker | plain worker |",
            "|---|---:|---:|",
        ]
        heads = set(idle["heads_sisy"]) | set(idle["heads_plain"])
        for head in sorted(heads, key=lambda h: -(idle["heads_sisy"][h] + idle["heads_plain"][h])):
            lines.append(
                f"| `{head.replace('|', '/')}` | {idle['heads_sisy'][head]} "
                f"| {idle['heads_plain'][head]} |"
            )
        lines.append("")
    if rss:
        lines.append(
            f"RSS: {rss['defined']:,} tasks defined, {rss['unplanned']} unplanned at the "
            f"sample; sisy-pg {fmt(rss['sisy'])} MB, plain {fmt(rss['plain'])} MB.\n"
        )
    if create:
        lines.append(
            f"Creating tasks through the public API (`task_with_callable` + "
            f"`Task.objects.bulk_create(batch_size=1000)`): {create['n']:,} tasks in "
            f"{create['total_s']:.2f} s (building and validating {create['build_s']:.2f} s, "
            f"inserting {create['insert_s']:.2f} s)"
            + (
                f"; 100,000 extrapolated: {create['per_100k_s']:.1f} s.\n"
                if create["extrapolated"]
                else ".\n"
            )
        )
    if "seq_scans" in d:
        lines.append(
            f"Hot query plans at {big} tasks: "
            + (
                "plans-smoke.txt with the workers' logs (--keep-logs) "
                if m.name == "smoke"
                else f"bench/results/plans-{m.name}.txt "
            )
            + (
                "(sequential scans of sisy tables: " + ", ".join(d["seq_scans"]) + ")"
                if d["seq_scans"]
                else "(index ranges only, no sequential scan of sisy_task or sisy_taskrun)"
            )
            + (
                ""
                if d.get("auto_explain")
                else "; this server has no auto_explain, so statements inside plpgsql "
                "functions are not shown"
            )
            + ".\n"
        )
    if d.get("metrics"):
        mx = d["metrics"]
        lines.append(
            f"Metrics: a scrape after 1,000 runs finished since the last one (it folds them): "
            f"{fmt(mx['changed_ms'], 2)} ms (median of 5, from a client). The trigger "
            f"that counts a run costs an insert of finished runs {fmt(mx['trigger_us'], 1)} µs a "
            f"run (the insert alone: {fmt(mx['insert_us'], 1)} µs a run); the history was "
            f"written in {fmt(mx['fill_s'], 1)} s.\n"
        )
    if bench.problems:
        lines += ["Not measured or failed:", ""]
        lines += [f"- {p}" for p in bench.problems]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def result_line(figures: dict[str, float]) -> str:
    def value(key: str) -> str:
        number = figures.get(key, math.nan)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf"
        return f"{number:.3f}" if key.endswith("ratio") else f"{number:.2f}"

    return "RESULT " + " ".join(f"{key}={value(key)}" for key in RESULT_KEYS)


# --- main ------------------------------------------------------------------------------------


def expected_seconds(mode: Mode, only: set[str]) -> float:
    total = 10.0
    if "lag" in only:
        total += 2 * (mode.warmup + mode.lag_seconds + 3) + 9
    if "enqueue" in only:
        total += mode.warmup + mode.lag_seconds + 3 + 5
    if "burst" in only:
        total += 14 + mode.burst / 500 + mode.burst / 130
    if "change" in only:
        total += 8 + mode.change_samples * 0.17
    if "scale" in only:
        total += (
            15
            + 3
            + mode.create / 1500
            + 12
            + mode.idle_tasks / 20000
            + mode.idle_seconds
            + 8
            + (mode.big - mode.idle_tasks) / 20000
            + mode.rss_settle
            + 10
            + 3
            + mode.parked_big / 10000
        )
    if "metrics" in only:
        total += 5 + mode.metrics_history / 35000
    return total


def fresh_database(server: str) -> str:
    name = f"sisy_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return embedded_pg.with_database(server, name)


def drop_database(server: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with contextlib.suppress(psycopg.Error), psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="under 5 minutes on 2 cores")
    group.add_argument("--smoke", action="store_true", help="tiny sizes: checks the bench runs")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="worker --concurrency for the lag, change, idle and rss scenarios (default 64: "
        "what docs/operations.md recommends for 50 runs due at once, one slot each; the "
        "burst is always 8)",
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the workers' logs (their path is printed)"
    )
    parser.add_argument(
        "--no-parked", action="store_true", help="skip the parked-jobs yardstick at the big size"
    )
    options = parser.parse_args(argv)
    mode = MODES["quick" if options.quick else "smoke" if options.smoke else "full"]
    only = {s.strip() for s in options.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")

    processes.exit_on_signals()
    if not os.environ.get("DATABASE_URL"):
        # The workers' statements go to the server log with their application_name.
        embedded_pg.SERVER_SETTINGS["log_line_prefix"] = LOG_LINE_PREFIX
    began = time.monotonic()
    progress = Progress(expected_seconds(mode, only))
    server = url = None
    db = bench = None
    text = failure = None
    try:
        with progress.phase("starting PostgreSQL, migrating", 8):
            server = embedded_pg.database_url()
            embedded = embedded_pg.started_server()
            url = fresh_database(server)
            os.environ["DATABASE_URL"] = url
            os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
            import django

            django.setup()
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
            db = Database(url)
        info = machine_and_versions(db)
        bench = Bench(mode, options, db, progress, embedded)
        for scenario in SCENARIOS:
            if scenario in only:
                getattr(bench, scenario)()
        load_end = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        text = report(bench, info, load_end, time.monotonic() - began)
        if bench.plans:
            # A smoke run's plans go with the workers' logs (kept with --keep-logs).
            folder = bench.logs if mode.name == "smoke" else RESULTS
            folder.mkdir(exist_ok=True)
            (folder / f"plans-{mode.name}.txt").write_text("\n".join(bench.plans) + "\n")
    except Exception as exc:  # a broken setup: still one RESULT line (all nan), exit 1
        failure = f"{type(exc).__name__}: {exc}"
        progress.note(traceback.format_exc())
    finally:
        progress.close()
        if bench is not None:
            bench.workers.stop_all()
            if options.keep_logs:
                print(f"workers' logs: {bench.logs}", file=sys.stderr)
            else:
                shutil.rmtree(bench.logs, ignore_errors=True)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if db is not None:
            db.close()
        if server is not None and url is not None:
            drop_database(server, url)
    if text is None:
        print(f"bench failed: {failure}")
        print(result_line({}), flush=True)
        return 1
    RESULTS.mkdir(exist_ok=True)
    if mode.name != "smoke":
        (RESULTS / "latest.md").write_text(text)
    if mode.name == "full":
        (RESULTS / f"full-{time.strftime('%Y-%m-%d', time.gmtime())}.md").write_text(text)
    print(text)
    print(result_line(bench.figures if bench is not None else {}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
