"""The procrastinate task that executes the runs of sisy tasks due at one instant.

The planner defers one job per group of runs due at the same instant
(``run_ids``, ``at``; SISY_RUNS_PER_JOB runs at most). The task is
asynchronous: it waits for the instant on the worker's event loop, starts
the runs in one statement (which also reads their tasks' rows) and records
each outcome in one more, on a small pool of autocommit connections of the
worker's, and calls each callable in a thread, where Django's connections
are handled as around a request (an ``async def`` callable too: see
:func:`_await_on_a_loop_of_its_own`). Runs claimed ahead therefore hold no
thread while they wait, the runs of one instant share a job fetch and a
worker slot, and a run opens no database connection unless its callable uses
the ORM.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import dataclasses
import datetime as dt
import functools
import inspect
import logging
import os
import socket
import time
import traceback as tb
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.db import close_old_connections, reset_queries
from procrastinate import JobContext

from . import callables, conf, procrastinate_seam
from .limits import printable
from .store import Query, StartedRun, Store, default_store
from .vocabulary import NotStarted, RunStatus

logger = logging.getLogger(__name__)

RUN_TASK_NAME = "sisy.run"

_HOST = socket.gethostname()
# How long a measure of the database's clock is trusted before it is taken again.
_CLOCK_REFRESH = 60.0


def _worker_label(context: JobContext) -> str:
    return f"{_HOST}:{os.getpid()}:{context.worker_name or 'worker'}"


class DatabaseClock:
    """This process's estimate of the database's clock, to wait for an instant without a query.

    The offset from this process's monotonic clock is measured by one query
    (the midpoint of its round trip) and taken again every minute; a step of
    the wall clock in between changes nothing. The estimate only decides how
    long to sleep: the start of a run is judged by the database itself, which
    answers 'early' (with the time left) to a run started before its
    instant, so a wrong estimate can delay a run but never start it early.
    """

    def __init__(self) -> None:
        self._offset: float | None = None
        self._measured_at = float("-inf")

    async def seconds_until(self, instant: float, store: Store, query: Query) -> float:
        if self._offset is None or time.monotonic() - self._measured_at > _CLOCK_REFRESH:
            await store.database_now(query)  # a connection ready: time the query alone
            before = time.monotonic()
            database_now = await store.database_now(query)
            after = time.monotonic()
            self._offset = database_now - (before + after) / 2
            self._measured_at = after
        return instant - (time.monotonic() + self._offset)

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
    and one that does not never opens any. Whatever goes wrong here is an
    outcome to record, never an exception that would leave the run running.
    """
    started = time.perf_counter()
    try:
        close_old_connections()
        try:
            func = callables.resolve(info, using=using)
        except callables.CallableError as exc:
            return Outcome("broken", exception=exc, traceback=tb.format_exc())
        started = time.perf_counter()
        result = func(message)
        if inspect.isawaitable(result):  # an async def, or a sync function returning a coroutine
            _await_on_a_loop_of_its_own(result)
        return Outcome(RunStatus.SUCCEEDED, time.perf_counter() - started)
    except BaseException as exc:
        return Outcome(RunStatus.FAILED, time.perf_counter() - started, exc, tb.format_exc())
    finally:
        try:
            close_old_connections()
            reset_queries()
        except Exception:
            logger.exception("Closing Django's connections after a run failed")


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _await_on_a_loop_of_its_own(awaitable: Awaitable[Any]) -> None:
    """Await an async callable's coroutine from its callable thread, which it holds meanwhile.

    Not on the worker's event loop: a coroutine that blocks (``time.sleep``,
    a sync library, a long computation) would stall the planner, every
    other run and procrastinate itself. It gets an event loop of its own
    (``async_to_sync``, in a thread asgiref starts for it) while this
    thread waits, so it holds a callable slot as a sync callable does, with
    the same timeout, retries, history and log lines. This thread also
    serves its ``sync_to_async`` calls, Django's async ORM among them: its
    queries run here, on this thread's connection, which ``_call`` closes
    as around a request, rather than queueing in asgiref's one thread for
    the whole process, whose connections nothing would close.
    """
    async_to_sync(_awaited, force_new_loop=True)(awaitable)


async def _wait_for(at: float | None, store: Store, query: Query) -> None:
    """Wait for the instant, on this worker's estimate of the database's clock."""
    if at is not None:
        remaining = await _clock.seconds_until(at, store, query)
        if remaining > 0:
            await asyncio.sleep(remaining)


async def run_task(
    context: JobContext, run_ids: list[int], at: float | None = None
) -> dict[str, int]:
    """Run the callables of TaskRuns ``run_ids`` at ``at``; record each outcome on its run.

    The runs start together, as many at once as the worker has callable
    slots free (its ``--concurrency``), the others as slots free up. A
    callable that cannot be resolved marks its task broken (it stops firing
    until a writer mends it). An exception in a callable is recorded
    (message and traceback, logged once); the task's ``retries`` option
    queues the run again after a backoff, with a job of its own. The job
    succeeds once its runs are recorded, whatever their outcomes; it fails
    only when one could not be recorded (the database unreachable), and the
    housekeeping closes such runs later. Cancelling the job (an abort, the
    end of a worker's graceful shutdown) stops it starting more runs, but
    the runs started are carried to their end and recorded: a thread cannot
    be stopped. Returns how many runs ended how.
    """
    store = default_store()
    options = procrastinate_seam.job_worker_options(context)
    query = store.runner_query(options.concurrency)
    slots = _callable_slots(options.concurrency)
    runs: list[asyncio.Task[str]] = []
    try:
        await _wait_for(at, store, query)
        await _start_in_slots(context, options, store, query, slots, list(run_ids), runs)
    finally:
        outcomes = await _all_recorded(runs)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    for failure in failures[1:]:
        logger.error(
            f"A run of job {context.job.id} could not be recorded: {failure!r}",
            exc_info=failure,
            extra={"action": "run_not_recorded", "job_id": context.job.id},
        )
    if failures:
        raise failures[0]
    return dict(collections.Counter(outcome for outcome in outcomes if isinstance(outcome, str)))


async def _start_in_slots(
    context: JobContext,
    options: procrastinate_seam.WorkerOptions,
    store: Store,
    query: Query,
    slots: CallableSlots,
    pending: list[int],
    runs: list[asyncio.Task[str]],
) -> None:
    """Start the runs as slots free up, each in a task of ``runs`` as soon as it started.

    A run the database calls 'early' (this worker's clock estimate was off)
    or 'busy' (a writer holds its row) gives its slot back and is tried
    again after the wait the database says.
    """
    while pending:
        taken = await slots.take(len(pending))
        batch, pending = pending[:taken], pending[taken:]
        try:
            started = await store.start_runs(
                query,
                run_ids=batch,
                job_id=context.job.id,
                worker=_worker_label(context),
                stalled_after=dt.timedelta(seconds=options.stalled_worker_timeout),
                default_grace=dt.timedelta(seconds=float(conf.settings.GRACE)),
            )
        except BaseException:
            slots.give_back(taken)
            raise
        again = [run for run in started if run.status in (NotStarted.EARLY, NotStarted.BUSY)]
        slots.give_back(len(again))
        runs += [
            asyncio.create_task(_run_in_slot(context, store, query, run, slots))
            for run in started
            if run not in again
        ]
        if again:
            wait = max(run.wait or 0.0 for run in again)
            logger.debug(
                f"{len(again)} run(s) not started yet ({again[0].status}): "
                f"again in {wait * 1000:.1f} ms",
                extra={"action": "runs_again", "run_ids": [r.run_id for r in again], "wait": wait},
            )
            if any(run.status == NotStarted.EARLY for run in again):
                _clock.forget()
            pending = [run.run_id for run in again] + pending
            await asyncio.sleep(wait)


async def _all_recorded(runs: list[asyncio.Task[str]]) -> list[str | BaseException]:
    """Every run's outcome, even if this job is cancelled meanwhile (then re-raised)."""
    gathering = asyncio.gather(*runs, return_exceptions=True)
    cancelled = False
    while True:
        try:
            outcomes = await asyncio.shield(gathering)
            break
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return list(outcomes)


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
        if started.status == NotStarted.BROKEN:
            # sisy_start_run_v1 found the task's row beyond sisy's limits (one
            # written before them): the run failed, the task is broken.
            logger.error(
                f"Run {run_id} not started: its task's row is beyond sisy's limits, and the "
                "task is broken until the row is fixed (sisy_task.error says why)",
                extra={"action": "task_broken", "run_id": run_id, "status": started.status},
            )
            return started.status
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
        if not await finish(status=RunStatus.SUCCEEDED):
            log.returned_late(RunStatus.SUCCEEDED)
            return RunStatus.TIMED_OUT
        log.ended(RunStatus.SUCCEEDED)
        return RunStatus.SUCCEEDED

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
    if not await finish(status=RunStatus.FAILED, error=error, traceback=outcome.traceback):
        log.returned_late(RunStatus.FAILED)
        return RunStatus.TIMED_OUT
    log.ended(RunStatus.FAILED)
    return RunStatus.FAILED


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
            f"Run {run_id} of task {task.pk} ({printable(task.label)}) for "
            f"{started.scheduled_for.isoformat()}"
        )
        self.extra = {
            "run_id": run_id,
            "task_id": task.pk,
            "task": printable(task.label),
            "scheduled_for": started.scheduled_for.isoformat(),
            "attempt": started.attempt,
            "lag_ms": round(self.lag_ms, 3),
            "duration_ms": round(outcome.duration * 1000, 3),
        }

    def ended(self, status: str) -> None:
        failed = status == RunStatus.FAILED
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
                "status": RunStatus.QUEUED,
                "retry_at": retry_at.isoformat(),
                **self.extra,
            },
            exc_info=self.outcome.exception,
        )

    def broken(self, reason: str, *, first: bool) -> None:
        # An error once per breakage: a run that finds its task already broken is news to no one.
        if not first:
            logger.info(
                f"{self.name}: failed, its callable cannot be resolved: {reason}",
                extra={
                    "action": "run_failed",
                    "status": RunStatus.FAILED,
                    "reason": reason,
                    **self.extra,
                },
            )
            return
        logger.error(
            f"Task {self.extra['task_id']} ({self.extra['task']}) is broken and stops firing "
            f"until its row is fixed: {reason} (run {self.extra['run_id']} for "
            f"{self.extra['scheduled_for']})",
            extra={
                "action": "task_broken",
                "status": RunStatus.FAILED,
                "reason": reason,
                **self.extra,
            },
        )

    def returned_late(self, outcome: str) -> None:
        logger.warning(
            f"{self.name}: {outcome} after the run was closed (timed out, or its worker "
            "deemed lost); noted in its details",
            extra={
                "action": "run_returned_late",
                "status": RunStatus.TIMED_OUT,
                "outcome": outcome,
                **self.extra,
            },
            exc_info=self.outcome.exception,
        )
