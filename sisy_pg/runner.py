"""The procrastinate task that executes one run of a sisy task.

The planner defers one job per group of runs due at the same instant
(``run_ids``, ``at``; SISY_RUNS_PER_JOB runs at most). The task is
asynchronous: it waits for the instant on the worker's event loop, starts
the runs in one statement (which also reads their tasks' rows) and records
each outcome in one more, on a small pool of autocommit connections of the
worker's, and calls each callable in a thread, where Django's connections
are handled as around a request. Runs claimed ahead therefore hold no thread
while they wait, the runs of one instant share a job fetch and a worker
slot, and a run opens no database connection unless its callable uses the
ORM.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import dataclasses
import datetime as dt
import functools
import logging
import os
import socket
import time
import traceback as tb
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, reset_queries
from procrastinate import JobContext

from . import callables, conf, procrastinate_seam
from .store import Query, StartedRun, Store, default_store

logger = logging.getLogger(__name__)

RUN_TASK_NAME = "sisy.run"

_HOST = socket.gethostname()
# How long a measure of the database's clock is trusted before it is taken again.
_CLOCK_REFRESH = 60.0


def _worker_label(context: JobContext) -> str:
    return f"{_HOST}:{os.getpid()}:{context.worker_name or 'worker'}"


class DatabaseClock:
    """This process's estimate of the database's clock, to wait for an instant without a query.

    The offset from the local clock is measured by one query (the midpoint of
    its round trip) and taken again every minute. The estimate only decides
    how long to sleep: the start of a run is judged by the database itself,
    which answers 'early' (with the time left) to a run started before its
    instant, so a wrong local clock can delay a run but never start it early.
    """

    def __init__(self) -> None:
        self._offset: float | None = None
        self._measured_at = float("-inf")

    async def seconds_until(self, instant: float, store: Store, query: Query) -> float:
        if self._offset is None or time.monotonic() - self._measured_at > _CLOCK_REFRESH:
            before = time.time()
            database_now = await store.database_now(query)
            after = time.time()
            self._offset = database_now - (before + after) / 2
            self._measured_at = time.monotonic()
        return instant - (time.time() + self._offset)

    def forget(self) -> None:
        """Measure again at the next wait (the database found the estimate wrong)."""
        self._offset = None


_clock = DatabaseClock()


class CallableSlots:
    """At most ``--concurrency`` callables at once in a worker, each with a thread ready.

    A run is started (marked running, its ``started_at`` and timeout set)
    only once it holds a slot, so that its lag and duration are the
    callable's, not time spent waiting for a thread. The threads are not the
    event loop's default pool, whose size follows the CPU count and would
    cap ``--concurrency`` for blocking callables.
    """

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self.threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.size, thread_name_prefix="sisy-run"
        )
        self._free = asyncio.Semaphore(self.size)

    async def take(self, wanted: int) -> int:
        """Wait for one free slot, then take up to ``wanted`` of those free; how many."""
        await self._free.acquire()
        taken = 1
        while taken < wanted and not self._free.locked():
            await self._free.acquire()  # free: returns at once
            taken += 1
        return taken

    def give_back(self, count: int = 1) -> None:
        for _ in range(count):
            self._free.release()


_slots: dict[asyncio.AbstractEventLoop, CallableSlots] = {}


def _callable_slots(size: int) -> CallableSlots:
    """The slots of the worker running on this event loop."""
    loop = asyncio.get_running_loop()
    if loop not in _slots:
        _slots.clear()  # a worker runs one loop; a new one replaces the last (tests)
        _slots[loop] = CallableSlots(size)
    return _slots[loop]


@dataclasses.dataclass
class Outcome:
    """How a call ended, as seen from its thread."""

    status: str  # succeeded, failed or broken
    duration: float = 0.0  # seconds the callable ran
    exception: BaseException | None = None
    traceback: str = ""


def _call(info: dict[str, Any], message: dict[str, Any], using: str) -> Outcome:
    """Resolve the callable and call it; in a callable thread, with Django's connection hygiene.

    As procrastinate's middleware does for sync tasks (and Django around a
    request): connections past CONN_MAX_AGE are closed before and after, so
    a callable that uses the ORM gets a working connection and leaks none,
    and one that does not never opens any.
    """
    close_old_connections()
    try:
        try:
            func = callables.resolve(info, using=using)
        except callables.CallableError as exc:
            return Outcome("broken", exception=exc, traceback=tb.format_exc())
        started = time.perf_counter()
        try:
            func(message)
        except BaseException as exc:
            return Outcome("failed", time.perf_counter() - started, exc, tb.format_exc())
        return Outcome("succeeded", time.perf_counter() - started)
    finally:
        close_old_connections()
        reset_queries()


async def _wait_for(at: float | None, store: Store, query: Query) -> None:
    """Wait for the instant, on this worker's estimate of the database's clock."""
    if at is not None:
        remaining = await _clock.seconds_until(at, store, query)
        if remaining > 0:
            await asyncio.sleep(remaining)


async def _start(
    context: JobContext, store: Store, query: Query, run_ids: list[int]
) -> list[StartedRun]:
    """Start the runs; the database is the judge of their instant ('early': wait, again)."""
    options = procrastinate_seam.job_worker_options(context)
    done: list[StartedRun] = []
    while run_ids:
        started = await store.start_runs(
            query,
            run_ids=run_ids,
            job_id=context.job.id,
            worker=_worker_label(context),
            stalled_after=dt.timedelta(seconds=options.stalled_worker_timeout),
            default_grace=dt.timedelta(seconds=float(conf.settings.GRACE)),
        )
        done += [run for run in started if run.status != "early"]
        early = [run for run in started if run.status == "early"]
        run_ids = [run.run_id for run in early]
        if early:
            wait = max(run.wait or 0.0 for run in early)
            logger.debug(
                f"{len(early)} run(s) reached the database {wait * 1000:.1f} ms early",
                extra={"action": "runs_early", "run_ids": run_ids, "wait": wait},
            )
            _clock.forget()
            await asyncio.sleep(wait)
    return done


async def run_task(
    context: JobContext, run_ids: list[int], at: float | None = None
) -> dict[str, int]:
    """Run the callables of TaskRuns ``run_ids`` at ``at``; record each outcome on its run.

    The runs start together, as many at once as the worker has callable
    slots free (its ``--concurrency``), the others as slots free up. A
    callable that cannot be resolved marks its task broken (it stops firing
    until a writer mends it). An exception in a callable is recorded
    (message and traceback, logged once); the task's ``retries`` option
    queues the run again after a backoff, with a job of its own. Either way
    the job itself succeeds: its work was to run and record the runs. The
    worker carries on and the tasks keep their schedules. Returns how many
    runs ended how.
    """
    store = default_store()
    concurrency = procrastinate_seam.job_worker_options(context).concurrency
    query = store.runner_query(concurrency)
    slots = _callable_slots(concurrency)
    await _wait_for(at, store, query)
    runs: list[asyncio.Task[str]] = []
    pending = list(run_ids)
    try:
        while pending:
            taken = await slots.take(len(pending))
            batch, pending = pending[:taken], pending[taken:]
            try:
                started = await _start(context, store, query, batch)
            except BaseException:
                slots.give_back(taken)
                raise
            runs += [
                asyncio.create_task(_run_in_slot(context, store, query, run, slots))
                for run in started
            ]
    finally:
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome  # after every run of the job has ended
    return dict(collections.Counter(outcome for outcome in outcomes if isinstance(outcome, str)))


async def _run_in_slot(
    context: JobContext, store: Store, query: Query, started: StartedRun, slots: CallableSlots
) -> str:
    """Run a started run, giving its slot back as soon as its callable has returned."""
    held = True

    def give_back() -> None:
        nonlocal held
        if held:
            held = False
            slots.give_back()

    try:
        return await _run(context, store, query, started, slots.threads, give_back)
    finally:
        give_back()


async def _run(
    context: JobContext,
    store: Store,
    query: Query,
    started: StartedRun,
    threads: concurrent.futures.Executor,
    called: Callable[[], None],
) -> str:
    """Run one started run's callable in a callable thread (``called`` when it has returned);
    record and log how it ended."""
    run_id, task = started.run_id, started.task
    if task is None:
        logger.info(
            f"Run {run_id} not started: {started.status}",
            extra={"action": "run_not_started", "run_id": run_id, "status": started.status},
        )
        return started.status
    assert started.scheduled_for is not None and started.started_at is not None
    message: dict[str, Any] = {
        "task": task,
        # What Sisy's callables received: the Channels message that
        # started the run (the task's id and the instant, epoch seconds).
        "channel_message": {"id": task.pk, "ts": started.scheduled_for.timestamp()},
        "message": {
            "run_id": run_id,
            "scheduled_for": started.scheduled_for,
            "job_id": context.job.id,
            "worker": _worker_label(context),
            "attempt": started.attempt,
        },
    }
    call = functools.partial(_call, task.callable_info, message, store.database_alias)
    outcome = await asyncio.get_running_loop().run_in_executor(
        threads, contextvars.copy_context().run, call
    )
    called()  # its thread is free: the slot is the next run's while this one is recorded
    log = _RunLog(run_id, task, started, outcome)
    if outcome.status == "broken":
        reason = str(outcome.exception)
        broke = await store.break_task(
            query, run_id=run_id, reason=reason, traceback=outcome.traceback
        )
        log.broken(reason, first=broke)
        return "broken"

    job = context.job
    finish = functools.partial(
        store.finish_run, query, run_id=run_id, queue=job.queue, task_name=job.task_name
    )
    exc = outcome.exception
    if exc is None:
        if not await finish(status="succeeded"):
            log.returned_late("succeeded")
            return "timed_out"
        log.ended("succeeded")
        return "succeeded"

    error = f"{type(exc).__name__}: {exc}"
    attempt = started.attempt or 1
    retry_in = task.policy.retry_in(attempt) if isinstance(exc, Exception) else None
    if retry_in is not None:
        retry_at = await store.retry_run(
            query,
            run_id=run_id,
            error=error,
            traceback=outcome.traceback,
            retry_in=dt.timedelta(seconds=retry_in),
            queue=job.queue,
            task_name=job.task_name,
        )
        if retry_at is not None:
            log.retrying(retry_at)
            return "retrying"
    if not await finish(status="failed", error=error, traceback=outcome.traceback):
        log.returned_late("failed")
        return "timed_out"
    log.ended("failed")
    return "failed"


class _RunLog:
    """The log lines of one run: one per outcome, structured (``extra``) for shipping as JSON.

    A failing callable's traceback is logged here once (and stored with the
    run), never again by another layer.
    """

    def __init__(self, run_id: int, task: Any, started: StartedRun, outcome: Outcome) -> None:
        assert started.scheduled_for is not None and started.started_at is not None
        self.outcome = outcome
        self.lag_ms = (started.started_at - started.scheduled_for).total_seconds() * 1000
        self.name = (
            f"Run {run_id} of task {task.pk} ({task.label}) for {started.scheduled_for.isoformat()}"
        )
        self.extra = {
            "run_id": run_id,
            "task_id": task.pk,
            "task": task.label,
            "scheduled_for": started.scheduled_for.isoformat(),
            "attempt": started.attempt,
            "lag_ms": round(self.lag_ms, 3),
            "duration_ms": round(outcome.duration * 1000, 3),
        }

    def ended(self, status: str) -> None:
        failed = status == "failed"
        detail = f": {self.outcome.exception!r}" if failed else ""
        logger.log(
            logging.ERROR if failed else logging.INFO,
            f"{self.name}: {status} in {self.extra['duration_ms']:.1f} ms, "
            f"lag {self.lag_ms:.1f} ms{detail}",
            extra={"action": f"run_{status}", "status": status, **self.extra},
            exc_info=self.outcome.exception if failed else None,
        )

    def retrying(self, retry_at: dt.datetime) -> None:
        logger.warning(
            f"{self.name}: attempt {self.extra['attempt'] or 1} failed: "
            f"{self.outcome.exception!r}; retrying at {retry_at.isoformat()}",
            extra={
                "action": "run_retry",
                "status": "queued",
                "retry_at": retry_at.isoformat(),
                **self.extra,
            },
            exc_info=self.outcome.exception,
        )

    def broken(self, reason: str, *, first: bool) -> None:
        # An error once per breakage: a run that finds its task already broken is news to no one.
        if not first:
            logger.info(
                f"{self.name}: failed, its task is broken: {reason}",
                extra={"action": "run_failed", "status": "failed", "reason": reason, **self.extra},
            )
            return
        logger.error(
            f"Task {self.extra['task_id']} ({self.extra['task']}) is broken and stops firing "
            f"until its row is fixed: {reason} (run {self.extra['run_id']} for "
            f"{self.extra['scheduled_for']})",
            extra={"action": "task_broken", "status": "failed", "reason": reason, **self.extra},
        )

    def returned_late(self, outcome: str) -> None:
        logger.warning(
            f"{self.name}: {outcome} after it had timed out (noted in its details)",
            extra={
                "action": "run_returned_late",
                "status": "timed_out",
                "outcome": outcome,
                **self.extra,
            },
            exc_info=self.outcome.exception,
        )
