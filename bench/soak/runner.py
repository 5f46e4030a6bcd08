"""The soak itself: its database prepared, its workers started, one killed and replaced, all stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.soak.measure import LABEL, db_now, held_runs, measure, open_runs, rows
from bench.soak.result import SoakResult, hms
from devtools.workers import WorkerProcess

SETTINGS = "bench.soak.settings"
CALLABLE = "bench.soak.tasks.record"
# procrastinate runs sync jobs in the event loop's default thread pool, which
# has min(32, cores + 4) threads (and the planner's cron arithmetic shares it):
# more concurrency than that only fetches jobs that wait for a thread (and are
# lost with a killed worker). On 2 cores, 4, 6 and 10 gave the same throughput.
DEFAULT_CONCURRENCY = min(32, (os.cpu_count() or 1) + 4)


@dataclasses.dataclass
class Worker:
    """A `procrastinate worker` process of the soak, its RSS when sampled, and its fate."""

    process: WorkerProcess
    rss_start_mb: float | None = None
    rss_end_mb: float | None = None
    fate: str = "running"

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def pid(self) -> int:
        return self.process.process.pid

    def errors(self) -> int:
        """Lines of its log that say something broke (a planner failure, a traceback)."""
        return sum(
            1
            for line in self.process.output().splitlines()
            if "sisy planner failed" in line or "Side task" in line or line.startswith("Traceback")
        )

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "rss_start_mb": self.rss_start_mb,
            "rss_end_mb": self.rss_end_mb,
            "fate": self.fate,
        }


def prepare(tasks: int) -> None:
    """Migrate, create soak_execution and the tasks (run by `django shell` with SETTINGS)."""
    from django.core.management import call_command
    from django.db import connection

    from bench.soak.tasks import EXECUTION_TABLE
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


def prepare_in_subprocess(url: str, tasks: int, stalled_timeout: float, logs: Path) -> None:
    """:func:`prepare` under the soak's settings (this process may have others: the tests')."""
    preparing = WorkerProcess(
        "prepare",
        settings=SETTINGS,
        database_url=url,
        env=_env(stalled_timeout),
        log_dir=logs,
        command=("shell", "-c", f"from bench.soak.runner import prepare; prepare({tasks})"),
    )
    try:
        preparing.process.wait(timeout=300)
    finally:
        preparing.stop()
    if preparing.process.returncode:
        raise RuntimeError(f"preparing the database failed:\n{preparing.output()}")


def start_worker(
    url: str, name: str, concurrency: int, stalled_timeout: float, logs: Path
) -> Worker:
    return Worker(
        WorkerProcess(
            name,
            settings=SETTINGS,
            database_url=url,
            args=("--concurrency", str(concurrency)),
            env=_env(stalled_timeout),
            log_dir=logs,
        )
    )


def _env(stalled_timeout: float) -> dict[str, str]:
    return {"SOAK_STALLED_TIMEOUT": str(stalled_timeout)}


def _check_alive(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.fate == "running":
            worker.process.check_alive(40)


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
    is signalled once; WorkerProcess.stop() only finishes off one that did not exit.
    """
    running = [w.process.process for w in workers if w.process.alive()]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for worker in workers:
        worker.process.stop(timeout=10)


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
        prepare_in_subprocess(url, tasks, stalled_timeout, logs)
        progress(f"starting {workers} workers (--concurrency {concurrency})...")
        began = time.monotonic()
        for n in range(1, workers + 1):
            started.append(start_worker(url, f"w{n}", concurrency, stalled_timeout, logs))
        _wait_for(
            lambda: rows(
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
        t0 = rows(
            url,
            "SELECT date_trunc('second', clock_timestamp()) + make_interval(secs => %s)",
            [float(int(warmup) + 1)],
        )[0][0]
        time.sleep(max(0.0, (t0 - db_now(url)).total_seconds()))
        for worker in started:
            worker.rss_start_mb = worker.process.rss_mb()
        progress(f"planned; measuring from {hms(t0)}")

        _sleep_until(began + seconds / 2, started)
        victim = started[0]
        # Killed while it holds runs (it nearly always does), or the fault tests nothing.
        holding_by = time.monotonic() + 5
        while not held_runs(url, victim.pid) and time.monotonic() < holding_by:
            time.sleep(0.02)
        victim.process.kill()
        killed_at, killed_mono = db_now(url), time.monotonic()
        victim.fate = "SIGKILLed"
        held = held_runs(url, victim.pid)
        started.append(start_worker(url, f"w{workers + 1}", concurrency, stalled_timeout, logs))
        progress(f"SIGKILLed {victim.name} (pid {victim.pid}) holding {len(held)} runs; replaced")

        _sleep_until(began + seconds, started)
        # Housekeeping closes them once the worker is deemed stalled: within the
        # timeout plus two of its periods (planner.py) of the kill. Not waiting
        # longer: killed_open says if it did not.
        housekeeping = min(30.0, stalled_timeout / 2)
        closed_by = killed_mono + stalled_timeout + 2 * housekeeping + 5
        while open_runs(url, held) and time.monotonic() < closed_by:
            _sleep_until(min(closed_by, time.monotonic() + 1), started)
        for worker in started:
            if worker.fate == "running":
                worker.rss_end_mb = worker.process.rss_mb()
        stopped_at = db_now(url)
        progress("stopping the workers...")
        _stop_all(started)
        for worker in started:
            if worker.fate == "running":
                worker.fate = f"stopped (exit {worker.process.process.returncode})"
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
            worker_rows=[worker.row() for worker in started],
            log_errors=sum(worker.errors() for worker in started),
            **figures,
        )
    finally:
        for worker in started:
            worker.process.stop(timeout=10)
        shutil.rmtree(logs, ignore_errors=True)
