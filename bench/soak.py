"""Soak and fault benchmark: many every-second tasks, real workers, one killed mid-run.

    .venv/bin/python bench/soak.py [--tasks 1000] [--workers 4] [--seconds 600] [--quick]

N tasks on '* * * * * *' (the 6th field is seconds), W `procrastinate worker`
processes for D seconds; at D/2 one worker is SIGKILLed and a replacement
started. Then every instant of every task in the measured window must be
either executed exactly once (the callable, bench.soak_tasks.record, writes a
row per execution) or covered by a row of sisy_taskrun saying why not
(coalesced, late, missed range, worker lost...). Instants not yet dealt with
when the workers stop count as pending: a run still queued or running, or an
instant a planner had not reached yet (at or after its task's next_run). A
machine too small for the load is expected: the point is that overload is
recorded, never silent, and never runs an instant twice.

Also reported: the lag of executed runs, each worker's RSS after warm-up and at
the end, and what became of the killed worker's runs. --quick is 60 s with
procrastinate's stalled-worker timeout at 10 s instead of 30 s, so that the
killed worker's runs are closed within the run.

Starts an embedded PostgreSQL unless DATABASE_URL is set; uses a fresh
database on it, dropped afterwards. Writes the table to bench/results/soak.md
and ends with a RESULT line. Exit status 1 if an instant ran twice or went
unrecorded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import psycopg.conninfo  # noqa: E402

from devtools import processes  # noqa: E402
from devtools.embedded_pg import database_url, with_database  # noqa: E402

SETTINGS = "bench.soak_settings"
CALLABLE = "bench.soak_tasks.record"
LABEL = "soak-"
# procrastinate runs sync jobs in the event loop's default thread pool, which
# has min(32, cores + 4) threads (and the planner's cron arithmetic shares it):
# more concurrency than that only fetches jobs that wait for a thread (and are
# lost with a killed worker). On 2 cores, 4, 6 and 10 gave the same throughput.
DEFAULT_CONCURRENCY = min(32, (os.cpu_count() or 1) + 4)


@dataclasses.dataclass
class Worker:
    """A `procrastinate worker` process of the soak, and its RSS when sampled."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    rss_start_mb: float | None = None
    rss_end_mb: float | None = None
    fate: str = "running"

    @property
    def pid(self) -> int:
        return self.process.pid

    def errors(self) -> int:
        """Lines of its log that say something broke (a planner failure, a traceback)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(
            1
            for line in text.splitlines()
            if "sisy planner failed" in line or "Side task" in line or line.startswith("Traceback")
        )

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass
class SoakResult:
    """What the database says after the soak (see the module doc)."""

    tasks: int
    workers: int
    seconds: float
    concurrency: int
    stalled_timeout: float
    window: tuple[dt.datetime, dt.datetime]  # [T0, T1], whole seconds, both included
    stopped_at: dt.datetime
    killed_at: dt.datetime
    outcomes: dict[str, int]  # per expected instant: done, pending, status/reason, unrecorded
    executions: int  # rows of soak_execution, all instants
    duplicated: int  # (task, instant) executed more than once, all instants
    executed_not_succeeded: dict[str, int]  # executions whose run ended otherwise
    double_records: int  # instants inside a missed range that also have a row of their own
    lag: dict[str, float]  # seconds: p50, p95, max, n
    killed_runs: dict[str, int]  # the killed worker's runs (started or fetched): status/reason
    killed_open: int  # ...still queued or running at the end
    killed_closed_after: float | None  # seconds from the kill to the last of them closed
    pending_oldest: float | None  # seconds before the stop of the oldest pending instant
    worker_rows: list[dict[str, Any]]
    log_errors: int

    @property
    def expected(self) -> int:
        return sum(self.outcomes.values())

    @property
    def done(self) -> int:
        return self.outcomes.get("done", 0)

    @property
    def unrecorded(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith("unrecorded"))

    @property
    def pending(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith("pending"))

    def _status(self, status: str) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith(f"{status}/"))

    @property
    def ok(self) -> bool:
        return self.duplicated == 0 and self.unrecorded == 0 and self.done > 0

    def _rss(self, key: str) -> float:
        values = [row[key] for row in self.worker_rows if row[key] is not None]
        return max(values, default=0.0)

    def result_line(self) -> str:
        return (
            f"RESULT expected={self.expected} done={self.done} duplicated={self.duplicated} "
            f"unrecorded={self.unrecorded} pending={self.pending} "
            f"missed={self._status('missed')} skipped={self._status('skipped')} "
            f"failed={self._status('failed')} rss_start_mb={self._rss('rss_start_mb'):.1f} "
            f"rss_end_mb={self._rss('rss_end_mb'):.1f}"
        )

    def markdown(self) -> str:
        t0, t1 = self.window
        span = (t1 - t0).total_seconds() + 1
        lines = [
            (
                f"# sisy-pg soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"{os.cpu_count()} cores)"
            ),
            "",
            (
                f"{self.tasks:,} tasks on `* * * * * *`, {self.workers} workers "
                f"(`--concurrency {self.concurrency}`) for {self.seconds:g} s; one worker "
                f"SIGKILLed at {_hms(self.killed_at)} and replaced; stalled-worker timeout "
                f"{self.stalled_timeout:g} s. Measured window {_hms(t0)} to {_hms(t1)} "
                f"({span:g} instants per task; workers told to stop at {_hms(self.stopped_at)})."
            ),
            "",
            "## Every expected instant",
            "",
            "| outcome | instants | share |",
            "|---|---:|---:|",
        ]
        for outcome, count in sorted(self.outcomes.items(), key=lambda item: -item[1]):
            lines.append(f"| {outcome} | {count:,} | {_share(count, self.expected)} |")
        lines.append(f"| **expected** | **{self.expected:,}** | |")
        lines += [
            "",
            "## Checks",
            "",
            "| check | value |",
            "|---|---:|",
            f"| (task, instant) executed more than once (must be 0) | {self.duplicated} |",
            f"| expected instants with no covering row (must be 0) | {self.unrecorded} |",
            f"| instants of a missed range with a row of their own | {self.double_records} |",
            f"| executions, all instants | {self.executions:,} |",
            f"| executions per second in the window | {self.done / span:,.1f} |",
        ]
        for outcome, count in sorted(self.executed_not_succeeded.items()):
            lines.append(f"| executions whose run ended {outcome} | {count} |")
        if self.pending_oldest is not None:
            lines.append(
                f"| oldest pending instant, seconds before the stop | {self.pending_oldest:.1f} |"
            )
        lines.append(f"| error lines in the worker logs | {self.log_errors} |")
        if self.lag.get("n"):
            lines += [
                "",
                "## Lag of executed runs (started_at - scheduled_for, database clock)",
                "",
                "| runs | p50 s | p95 s | max s |",
                "|---:|---:|---:|---:|",
                (
                    f"| {int(self.lag['n']):,} | {self.lag['p50']:.3f} | {self.lag['p95']:.3f} "
                    f"| {self.lag['max']:.3f} |"
                ),
            ]
        lines += ["", "## The killed worker's runs (started or fetched when it died)", ""]
        lines += ["| status/reason | runs |", "|---|---:|"]
        for outcome, count in sorted(self.killed_runs.items()):
            lines.append(f"| {outcome} | {count} |")
        lines.append(f"| still queued or running at the end (must be 0) | {self.killed_open} |")
        if self.killed_closed_after is not None:
            lines.append(
                f"| closed by housekeeping, s after the kill | {self.killed_closed_after:.1f} |"
            )
        lines += [
            "",
            "## Workers (RSS from /proc/<pid>/status VmRSS)",
            "",
            "| worker | pid | RSS after warm-up MB | RSS at the end MB | fate |",
            "|---|---:|---:|---:|---|",
        ]
        for row in self.worker_rows:
            lines.append(
                f"| {row['name']} | {row['pid']} | {_mb(row['rss_start_mb'])} "
                f"| {_mb(row['rss_end_mb'])} | {row['fate']} |"
            )
        lines += ["", self.result_line()]
        return "\n".join(lines) + "\n"


def _hms(instant: dt.datetime) -> str:
    return instant.astimezone(dt.timezone.utc).strftime("%H:%M:%S UTC")


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f} %" if total else "-"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def db_now(url: str) -> dt.datetime:
    """The database's clock: every instant and every run timestamp is on it."""
    now: dt.datetime = query(url, "SELECT clock_timestamp()")[0][0]
    return now


def rss_mb(pid: int) -> float | None:
    """VmRSS of a live process, in MB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def _env(url: str, stalled_timeout: float) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": str(ROOT),
        "SOAK_STALLED_TIMEOUT": str(stalled_timeout),
    }


def prepare(tasks: int) -> None:
    """Migrate, create soak_execution and the tasks (run in a subprocess with SETTINGS)."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from bench.soak_tasks import EXECUTION_TABLE
    from sisy_pg.models import Task, task_with_callable

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(EXECUTION_TABLE)
    # Without next_run: the workers' planners plan them (Task.save() would plan each).
    Task.objects.bulk_create(
        [
            task_with_callable(CALLABLE, label=f"{LABEL}{n}", schedule="* * * * * *")
            for n in range(tasks)
        ],
        batch_size=1000,
    )


def _prepare_in_subprocess(url: str, tasks: int, stalled_timeout: float) -> None:
    process = processes.spawn(
        [sys.executable, "-c", f"import bench.soak; bench.soak.prepare({tasks})"],
        cwd=ROOT,
        env=_env(url, stalled_timeout),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        processes.stop(process)
    if process.returncode:
        raise RuntimeError(f"preparing the database failed:\n{output.decode(errors='replace')}")


def start_worker(
    url: str, name: str, concurrency: int, stalled_timeout: float, logs: Path
) -> Worker:
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        process = processes.spawn(
            [
                sys.executable,
                "-m",
                "django",
                "procrastinate",
                "worker",
                "--name",
                name,
                "--concurrency",
                str(concurrency),
            ],
            cwd=ROOT,
            env=_env(url, stalled_timeout),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Worker(name, process, log)


def _check_alive(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.fate == "running" and worker.process.poll() is not None:
            raise RuntimeError(
                f"worker {worker.name} exited ({worker.process.returncode}):\n{worker.tail()}"
            )


def _sleep_until(deadline: float, workers: list[Worker]) -> None:
    """Sleep until monotonic ``deadline``, failing fast if a worker dies on its own."""
    while (left := deadline - time.monotonic()) > 0:
        _check_alive(workers)
        time.sleep(min(left, 1.0))


def _wait_for(
    predicate: Callable[[], Any], timeout: float, workers: list[Worker], what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        _check_alive(workers)
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout:g} s: {what}")
        time.sleep(0.5)


def _stop_all(workers: list[Worker], timeout: float = 60) -> None:
    """SIGTERM every worker at once (procrastinate's graceful stop), then wait for each.

    A second SIGTERM would make procrastinate abandon its running jobs, so each
    is signalled once; processes.stop() only finishes off one that did not exit.
    """
    running = [w for w in workers if w.process.poll() is None]
    for worker in running:
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for worker in workers:
        processes.stop(worker.process, timeout=10)


def _held_runs(url: str, pid: int) -> list[int]:
    """The open runs a worker holds: started by it, or whose job it has fetched.

    Its procrastinate worker id is read from a job of a run it started (the
    label is host:pid:name); the jobs it has fetched are those 'doing' under
    that id (after a SIGKILL its row stays until procrastinate prunes it as
    stalled).
    """
    rows = query(
        url,
        """SELECT j.worker_id FROM sisy_taskrun AS r JOIN procrastinate_jobs AS j ON j.id = r.job_id
            WHERE r.worker LIKE %s AND j.worker_id IS NOT NULL ORDER BY r.id DESC LIMIT 1""",
        [f"%:{pid}:%"],
    )
    worker_id = rows[0][0] if rows else None
    held = query(
        url,
        """SELECT r.id FROM sisy_taskrun AS r
             LEFT JOIN procrastinate_jobs AS j ON j.id = r.job_id
            WHERE r.status IN ('queued', 'running')
              AND (r.worker LIKE %s OR (j.worker_id = %s AND j.status = 'doing'))""",
        [f"%:{pid}:%", worker_id],
    )
    return [run_id for (run_id,) in held]


def _open_runs(url: str, run_ids: list[int]) -> int:
    return int(
        query(
            url,
            """SELECT count(*) FROM sisy_taskrun
                WHERE id = ANY(%s::bigint[]) AND status IN ('queued', 'running')""",
            [run_ids],
        )[0][0]
    )


OUTCOMES_SQL = """
WITH expected AS (
    SELECT t.id AS task_id, t.next_run, i.instant
      FROM sisy_task AS t
     CROSS JOIN generate_series(%(t0)s::timestamptz, %(t1)s::timestamptz, interval '1 second')
           AS i(instant)
     WHERE t.label LIKE %(label)s
), executed AS (
    SELECT DISTINCT task_id, scheduled_for FROM soak_execution
), ranges AS (
    -- One 'missed' row covers every instant from its scheduled_for to details.through
    -- (every second: the schedule of every soak task).
    SELECT DISTINCT m.task_id, i.instant
      FROM sisy_taskrun AS m
     CROSS JOIN LATERAL generate_series(
           m.scheduled_for, (m.details ->> 'through')::timestamptz, interval '1 second'
       ) AS i(instant)
     WHERE m.status = 'missed' AND m.details ->> 'reason' = 'missed'
)
SELECT CASE
           WHEN x.task_id IS NOT NULL THEN 'done'
           WHEN r.status IN ('queued', 'running') THEN 'pending: ' || r.status
           WHEN r.status = 'succeeded' THEN 'unrecorded: succeeded, but never executed'
           WHEN r.status IS NOT NULL THEN r.status || '/' || coalesce(r.details ->> 'reason', '-')
           WHEN g.task_id IS NOT NULL THEN 'missed/missed'
           WHEN e.instant >= e.next_run THEN 'pending: not yet claimed by a planner'
           ELSE 'unrecorded'
       END AS outcome,
       count(*)
  FROM expected AS e
  LEFT JOIN executed AS x ON x.task_id = e.task_id AND x.scheduled_for = e.instant
  LEFT JOIN sisy_taskrun AS r ON r.task_id = e.task_id AND r.scheduled_for = e.instant
  LEFT JOIN ranges AS g ON g.task_id = e.task_id AND g.instant = e.instant
 GROUP BY 1
"""

DOUBLE_RECORDS_SQL = """
SELECT count(*)
  FROM sisy_taskrun AS m
 CROSS JOIN LATERAL generate_series(
       m.scheduled_for + interval '1 second', (m.details ->> 'through')::timestamptz,
       interval '1 second'
   ) AS i(instant)
  JOIN sisy_taskrun AS r ON r.task_id = m.task_id AND r.scheduled_for = i.instant
 WHERE m.status = 'missed' AND m.details ->> 'reason' = 'missed'
"""

LAG_SQL = """
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - scheduled_for)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - scheduled_for)),
       max(extract(epoch FROM started_at - scheduled_for))
  FROM sisy_taskrun
 WHERE started_at IS NOT NULL AND scheduled_for BETWEEN %(t0)s AND %(t1)s
"""


def measure(
    url: str,
    window: tuple[dt.datetime, dt.datetime],
    stopped_at: dt.datetime,
    killed_at: dt.datetime,
    killed_runs: list[int],
) -> dict[str, Any]:
    """Everything SoakResult reads from the database, once the workers have stopped."""
    t0, t1 = window
    params = {"t0": t0, "t1": t1, "label": f"{LABEL}%"}
    outcomes = dict(query(url, OUTCOMES_SQL, params))
    executions, duplicated = query(
        url,
        """SELECT coalesce(sum(n), 0)::bigint, count(*) FILTER (WHERE n > 1)
             FROM (SELECT count(*) AS n FROM soak_execution GROUP BY task_id, scheduled_for) AS c""",
    )[0]
    executed_not_succeeded = dict(
        query(
            url,
            """SELECT coalesce(r.status || '/' || coalesce(r.details ->> 'reason', '-'), 'no run row'),
                      count(*)
                 FROM soak_execution AS x LEFT JOIN sisy_taskrun AS r ON r.id = x.run_id
                WHERE r.status IS DISTINCT FROM 'succeeded'
                GROUP BY 1""",
        )
    )
    n, p50, p95, worst = query(url, LAG_SQL, params)[0]
    killed = dict(
        query(
            url,
            """SELECT status || '/' || coalesce(details ->> 'reason', '-'), count(*)
                 FROM sisy_taskrun WHERE id = ANY(%s::bigint[]) GROUP BY 1""",
            [killed_runs],
        )
    )
    (closed_after,) = query(
        url,
        """SELECT extract(epoch FROM max(finished_at) - %s)::float8 FROM sisy_taskrun
            WHERE id = ANY(%s::bigint[]) AND details ->> 'reason' IN ('worker_lost', 'not_started')""",
        [killed_at, killed_runs],
    )[0]
    (pending_oldest,) = query(
        url,
        """SELECT extract(epoch FROM %s - min(scheduled_for))::float8 FROM sisy_taskrun
            WHERE status IN ('queued', 'running')""",
        [stopped_at],
    )[0]
    return {
        "outcomes": outcomes,
        "executions": int(executions),
        "duplicated": int(duplicated),
        "executed_not_succeeded": executed_not_succeeded,
        "double_records": query(url, DOUBLE_RECORDS_SQL)[0][0],
        "lag": {"n": n, "p50": p50, "p95": p95, "max": worst} if n else {"n": 0},
        "killed_runs": killed,
        "killed_open": _open_runs(url, killed_runs),
        "killed_closed_after": closed_after,
        "pending_oldest": pending_oldest,
    }


def soak(
    url: str,
    tasks: int = 1000,
    workers: int = 4,
    seconds: float = 600,
    concurrency: int = DEFAULT_CONCURRENCY,
    stalled_timeout: float = 30,
    warmup: float = 5,
    margin: float = 5,
    progress: Callable[[str], object] = print,
) -> SoakResult:
    """Run the soak against ``url``, an empty database; stop everything it started.

    The workers run for ``seconds`` from their start; the measured window
    starts ``warmup`` s after every task is planned and ends ``margin`` s
    before the workers are told to stop (instants closer to the stop may
    legitimately still be queued). Before stopping, it waits for the killed
    worker's runs to be closed by housekeeping (at most the stalled-worker
    timeout plus two housekeeping periods), since that is one of its checks.
    """
    if workers < 1:
        raise ValueError("the soak kills one worker: it needs at least one")
    logs = Path(tempfile.mkdtemp(prefix="sisy-soak-"))
    started: list[Worker] = []
    try:
        progress(f"preparing the database: {tasks} tasks...")
        _prepare_in_subprocess(url, tasks, stalled_timeout)
        progress(f"starting {workers} workers (--concurrency {concurrency})...")
        began = time.monotonic()
        for n in range(1, workers + 1):
            started.append(start_worker(url, f"w{n}", concurrency, stalled_timeout, logs))
        _wait_for(
            lambda: query(
                url,
                """SELECT count(*) FILTER (WHERE next_run IS NULL) = 0
                          AND EXISTS (SELECT 1 FROM soak_execution)
                     FROM sisy_task WHERE label LIKE %s""",
                [f"{LABEL}%"],
            )[0][0],
            timeout=120,
            workers=started,
            what="every task planned and a first run executed",
        )
        t0 = query(
            url,
            "SELECT date_trunc('second', clock_timestamp()) + make_interval(secs => %s)",
            [float(int(warmup) + 1)],
        )[0][0]
        time.sleep(max(0.0, (t0 - db_now(url)).total_seconds()))
        for worker in started:
            worker.rss_start_mb = rss_mb(worker.pid)
        progress(f"planned; measuring from {_hms(t0)}")

        _sleep_until(began + seconds / 2, started)
        victim = started[0]
        # Killed while it holds runs (it nearly always does), or the fault tests nothing.
        holding_by = time.monotonic() + 5
        while not _held_runs(url, victim.pid) and time.monotonic() < holding_by:
            time.sleep(0.02)
        processes.stop(victim.process, signum=signal.SIGKILL)
        killed_at, killed_mono = db_now(url), time.monotonic()
        victim.fate = "SIGKILLed"
        held = _held_runs(url, victim.pid)
        started.append(start_worker(url, f"w{workers + 1}", concurrency, stalled_timeout, logs))
        progress(f"SIGKILLed {victim.name} (pid {victim.pid}) holding {len(held)} runs; replaced")

        _sleep_until(began + seconds, started)
        # Housekeeping closes them once the worker is deemed stalled: within the
        # timeout plus two of its periods (planner.py) of the kill. Not waiting
        # longer: killed_open says if it did not.
        housekeeping = min(30.0, stalled_timeout / 2)
        closed_by = killed_mono + stalled_timeout + 2 * housekeeping + 5
        while _open_runs(url, held) and time.monotonic() < closed_by:
            _sleep_until(min(closed_by, time.monotonic() + 1), started)
        for worker in started:
            if worker.fate == "running":
                worker.rss_end_mb = rss_mb(worker.pid)
        stopped_at = db_now(url)
        progress("stopping the workers...")
        _stop_all(started)
        for worker in started:
            if worker.fate == "running":
                worker.fate = f"stopped (exit {worker.process.returncode})"
        t1 = (stopped_at - dt.timedelta(seconds=margin)).replace(microsecond=0)
        progress("measuring...")
        figures = measure(url, (t0, t1), stopped_at, killed_at, held)
        return SoakResult(
            tasks=tasks,
            workers=workers,
            seconds=seconds,
            concurrency=concurrency,
            stalled_timeout=stalled_timeout,
            window=(t0, t1),
            stopped_at=stopped_at,
            killed_at=killed_at,
            worker_rows=[
                {
                    "name": w.name,
                    "pid": w.pid,
                    "rss_start_mb": w.rss_start_mb,
                    "rss_end_mb": w.rss_end_mb,
                    "fate": w.fate,
                }
                for w in started
            ],
            log_errors=sum(w.errors() for w in started),
            **figures,
        )
    finally:
        for worker in started:
            processes.stop(worker.process, timeout=10)
        shutil.rmtree(logs, ignore_errors=True)


def fresh_database(server: str) -> str:
    name = f"sisy_soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(server, name)


def drop_database(server: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--quick", action="store_true", help="60 s, stalled-worker timeout 10 s")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--stalled-timeout", type=float, help="procrastinate's stalled_worker_timeout (s)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    options = parser.parse_args()
    seconds = 60 if options.quick else options.seconds
    stalled = options.stalled_timeout or (10 if options.quick else 30)

    processes.exit_on_signals()  # SIGTERM, SIGHUP: clean up as on Ctrl-C
    server = database_url()
    url = fresh_database(server)
    try:
        result = soak(
            url,
            tasks=options.tasks,
            workers=options.workers,
            seconds=seconds,
            concurrency=options.concurrency,
            stalled_timeout=stalled,
            progress=lambda line: print(line, flush=True),
        )
    finally:
        drop_database(server, url)
    report = result.markdown()
    print("\n" + report, end="")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(report)
    return 0 if result.ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP: the finally blocks ran
        print(f"soak interrupted ({str(interrupt) or 'SIGINT'})", file=sys.stderr)
        sys.exit(130)
