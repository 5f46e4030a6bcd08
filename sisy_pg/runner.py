"""The procrastinate task that executes the runs of sisy tasks due at one instant.

The planner defers one job per group of runs due at the same instant
(``run_ids``, ``task_ids``, ``at``; SISY_RUNS_PER_JOB runs at most). The
task is asynchronous: it waits for the instant on the worker's event loop,
takes a callable slot for each run (its task's fair share: see
:mod:`sisy_pg.slots`), starts the runs in one statement (which also reads
their tasks' rows) and records each outcome in one more, on the worker's
runners' pool (:class:`~sisy_pg.store.RunnerPool`), and calls each callable
in a thread of the worker's :class:`~sisy_pg.worker.SisyWorker`, where Django's connections
are handled as around a request (an ``async def`` callable too: see
:func:`_await_on_a_loop_of_its_own`). Runs claimed ahead therefore hold no
thread while they wait, the runs of one instant share a job fetch and a
worker slot, and a run opens no database connection unless its callable uses
the ORM.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import inspect
import logging
import time
import traceback as tb
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.db import close_old_connections, connections, reset_queries
from procrastinate import JobContext

from . import callables, conf, otel, procrastinate_seam, signals, task_targets
from .limits import printable
from .policies import Policy
from .slots import CallableSlots, OverShare
from .store import Query, StartedRun, Store
from .vocabulary import NotStarted, RunStatus

if TYPE_CHECKING:
    from .worker import SisyWorker

logger = logging.getLogger(__name__)

RUN_TASK_NAME = "sisy.run"

# How long a measure of the database's clock is trusted before it is taken again.
_CLOCK_REFRESH = 60.0


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
        if self.stale(time.monotonic()):
            await store.database_now(query)  # a connection ready: time the query alone
            sent = time.monotonic()
            database_now = await store.database_now(query)
            self.measured(database_now, sent, time.monotonic())
        return self.seconds_left(instant, time.monotonic())

    def stale(self, monotonic: float) -> bool:
        """Whether to measure before trusting the estimate: never measured, forgotten, or old."""
        return self._offset is None or monotonic - self._measured_at > _CLOCK_REFRESH

    def measured(self, database_now: float, sent: float, received: float) -> None:
        """The database read its clock, ``database_now``, for a query ``sent`` and ``received``
        at these times of this process's monotonic clock: at the midpoint, as far as we know."""
        self._offset = database_now - (sent + received) / 2
        self._measured_at = received

    def seconds_left(self, instant: float, monotonic: float) -> float:
        """Seconds from ``monotonic`` (this process's clock) to ``instant`` (the database's)."""
        assert self._offset is not None, "measured first"
        return instant - (monotonic + self._offset)

    def forget(self) -> None:
        """Measure again at the next wait (the database found the estimate wrong)."""
        self._offset = None


@dataclasses.dataclass
class Outcome:
    """How a call ended, as seen from its thread."""

    status: str  # succeeded, failed, broken or enqueued
    duration: float = 0.0  # seconds the callable ran
    exception: BaseException | None = None
    traceback: str = ""
    enqueued: task_targets.Enqueued | None = None  # a Django task's enqueue


ENQUEUED = "enqueued"


def _call(
    info: dict[str, Any],
    message: dict[str, Any],
    using: str,
    announce: Callable[[], None] | None = None,
) -> Outcome:
    """Resolve the callable and call it; in a callable thread, with Django's connection hygiene.

    As procrastinate's middleware does for sync tasks (and Django around a
    request): connections past CONN_MAX_AGE are closed before and after, so
    a callable that uses the ORM gets a working connection and leaks none,
    and one that does not never opens any. Whatever goes wrong here is an
    outcome to record, never an exception that would leave the run running.
    ``announce`` sends the signal run_started (it never raises).
    """
    started = time.perf_counter()
    try:
        close_old_connections()
        if announce is not None:
            announce()
        try:
            func = callables.resolve(info, using=using, userdata=message["task"].userdata)
        except callables.CallableError as exc:
            return Outcome("broken", exception=exc, traceback=tb.format_exc())
        started = time.perf_counter()
        result = func(message)
        if isinstance(result, task_targets.Enqueued):
            return Outcome(ENQUEUED, time.perf_counter() - started, enqueued=result)
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


async def _wait_for(at: float | None, sisy: SisyWorker) -> None:
    """Wait for the instant, on this worker's estimate of the database's clock."""
    if at is not None:
        remaining = await sisy.clock.seconds_until(at, sisy.store, sisy.pool.query)
        if remaining > 0:
            await asyncio.sleep(remaining)


async def run_task(
    context: JobContext,
    run_ids: list[int],
    at: float | None = None,
    task_ids: list[int | None] | None = None,
) -> dict[str, int]:
    """Run the callables of TaskRuns ``run_ids`` (of tasks ``task_ids``) at ``at``; record each outcome.

    The runs start together, as many at once as the worker has callable
    slots free (its ``--concurrency``), the others as slots free up, the
    highest priority first; a run whose task already holds its share of the
    slots is recorded as skipped (reason fair_share) instead (see
    :mod:`sisy_pg.slots`). A callable that cannot be resolved marks its task
    broken. An exception in a callable is recorded (message and traceback,
    logged once); the task's ``retries`` option queues the run again after a
    backoff, with a job of its own. A run past its task's timeout is
    recorded timed out and the job goes on without it; its thread, which
    cannot be stopped, keeps its slot, and its outcome is noted if it ever
    returns. The job succeeds once its runs are recorded, whatever their
    outcomes; it fails only when one could not be recorded (the database
    away for longer than SISY_OUTAGE_TOLERANCE), and the housekeeping closes
    such runs later. Cancelling the job (an abort) stops it starting more
    runs, but the runs started are carried to their end and recorded, unless
    the worker is stopping: then they are recorded as interrupted. Returns
    how many runs ended how.
    """
    sisy: SisyWorker = procrastinate_seam.sisy_worker_of(context)
    runs: dict[int, asyncio.Task[str]] = {}
    try:
        if task_ids is None or len(task_ids) != len(run_ids):  # a job deferred before task_ids
            task_ids = await sisy.store.tasks_of_runs(sisy.pool.query, run_ids=run_ids)
        pending = list(zip(run_ids, task_ids, strict=True))
        await _wait_for(at, sisy)
        await _start_in_slots(context, sisy, pending, runs)
    finally:
        outcomes = await _all_recorded(context, sisy, runs)
    counts, failures = _tally(outcomes)
    for failure in failures[1:]:
        logger.error(
            f"A run of job {context.job.id} could not be recorded: {failure!r}",
            exc_info=failure,
            extra={"action": "run_not_recorded", "job_id": context.job.id},
        )
    if failures:
        raise failures[0]
    return counts


def _tally(outcomes: list[str | BaseException]) -> tuple[dict[str, int], list[BaseException]]:
    """How many runs ended how, and the failures to record them (the job raises the first)."""
    counts = collections.Counter(outcome for outcome in outcomes if isinstance(outcome, str))
    return dict(counts), [outcome for outcome in outcomes if isinstance(outcome, BaseException)]


async def _start_in_slots(
    context: JobContext,
    sisy: SisyWorker,
    pending: list[tuple[int, Any]],
    runs: dict[int, asyncio.Task[str]],
) -> None:
    """Start the runs as slots free up, each in a task of ``runs`` as soon as it started.

    A run the database calls 'early' (this worker's clock estimate was off)
    or 'busy' (a writer holds its row) gives its slot back and is tried
    again after the wait the database says.
    """
    slots, priority = sisy.slots, context.job.priority or 0
    task_of = dict(pending)
    while pending:
        over, pending = _over_share(slots, pending)
        if over:
            await _skip_over_share(context, sisy, over)
            if not pending:
                return
        # Wait for one slot, then take those free for the runs that follow.
        first_id, first_task = pending[0]
        try:
            tickets = {first_id: await slots.take(first_task, priority, first_id)}
        except OverShare:
            continue  # its task reached its share while it waited: recorded above, next turn
        tickets.update(_free_tickets(slots, pending[1:]))
        pending = [(run_id, task) for run_id, task in pending if run_id not in tickets]
        try:
            started = await sisy.store.start_runs(
                sisy.pool.query,
                run_ids=list(tickets),
                job_id=context.job.id,
                worker=sisy.label,
                stalled_after=dt.timedelta(seconds=sisy.options.stalled_worker_timeout),
                default_grace=dt.timedelta(seconds=float(conf.settings.GRACE)),
            )
        except BaseException:
            for ticket in tickets.values():
                slots.give_back(ticket)
            raise
        answer = _StartAnswer.of(started)
        for run_id in answer.slots_back:
            slots.give_back(tickets[run_id])
        for run in answer.carried:
            runs[run.run_id] = asyncio.create_task(_run(context, sisy, run, tickets[run.run_id]))
        if answer.again:
            again = answer.again
            logger.debug(
                f"{len(again)} run(s) not started yet ({again[0].status}): "
                f"again in {answer.wait * 1000:.1f} ms",
                extra={
                    "action": "runs_again",
                    "run_ids": [r.run_id for r in again],
                    "wait": answer.wait,
                },
            )
            if answer.clock_wrong:
                sisy.clock.forget()
            pending = [(run.run_id, task_of[run.run_id]) for run in again] + pending
            await asyncio.sleep(answer.wait)


def _over_share(
    slots: CallableSlots, pending: list[tuple[int, Any]]
) -> tuple[list[tuple[int, OverShare]], list[tuple[int, Any]]]:
    """The runs whose task holds its share of the slots (to record as skipped), and the others."""
    over, within = [], []
    for run_id, task in pending:
        try:
            slots.check_share(task)
        except OverShare as exc:
            over.append((run_id, exc))
        else:
            within.append((run_id, task))
    return over, within


def _free_tickets(slots: CallableSlots, pending: list[tuple[int, Any]]) -> dict[int, int]:
    """Tickets of the slots free now for the runs of ``pending``, in order, by run.

    Stops at the first run no slot is free for: it and those after it wait
    their turn. Passes over a run whose task reached its share in this batch:
    it is recorded as skipped at the next turn.
    """
    tickets = {}
    for run_id, task in pending:
        try:
            ticket = slots.try_take(task, run_id)
        except OverShare:
            continue
        if ticket is None:
            break
        tickets[run_id] = ticket
    return tickets


@dataclasses.dataclass(frozen=True)
class _StartAnswer:
    """What sisy_start_run_v1 made of a batch of runs, sorted for the runner."""

    carried: list[StartedRun]  # each to its _run: its callable called, or why not said
    again: list[StartedRun]  # 'early' or 'busy': asked again after ``wait`` seconds
    wait: float
    clock_wrong: bool  # a run was early: this worker's estimate of the database's clock is off
    slots_back: list[int]  # the runs that give their slot back now: no callable to call

    @classmethod
    def of(cls, started: list[StartedRun]) -> _StartAnswer:
        again = [run for run in started if run.status in (NotStarted.EARLY, NotStarted.BUSY)]
        again_ids = {run.run_id for run in again}
        return cls(
            carried=[run for run in started if run.run_id not in again_ids],
            again=again,
            wait=max((run.wait or 0.0 for run in again), default=0.0),
            clock_wrong=any(run.status == NotStarted.EARLY for run in again),
            slots_back=[
                run.run_id for run in started if run.run_id in again_ids or run.task is None
            ],
        )


async def _skip_over_share(
    context: JobContext, sisy: SisyWorker, over: list[tuple[int, OverShare]]
) -> None:
    """Record runs whose task holds its share of the slots as skipped (fair_share), and say so."""
    for error, run_ids in _by_error(over).items():
        skipped = await sisy.store.skip_runs_over_share(
            sisy.pool.query,
            run_ids=run_ids,
            job_id=context.job.id,
            worker=sisy.label,
            error=f"fair share: {error}",
        )
        if skipped:
            logger.warning(
                f"Run(s) {', '.join(map(str, skipped))} skipped: {error}",
                extra={"action": "runs_over_share", "run_ids": skipped, "reason": "fair_share"},
            )
            signals.not_run(sisy.store.database_alias, skipped)


def _by_error(over: list[tuple[int, OverShare]]) -> dict[str, list[int]]:
    """The runs by the words of their refusal: one statement records those sharing them."""
    by_error: dict[str, list[int]] = collections.defaultdict(list)
    for run_id, exc in over:
        by_error[str(exc)].append(run_id)
    return dict(by_error)


async def _all_recorded(
    context: JobContext, sisy: SisyWorker, runs: dict[int, asyncio.Task[str]]
) -> list[str | BaseException]:
    """Every run's outcome, even if this job is cancelled meanwhile (then re-raised).

    Cancelled while the worker stops (after its graceful shutdown timeout):
    the runs still in their callables are recorded as interrupted, and the
    job ends without them.
    """
    gathering = asyncio.gather(*runs.values(), return_exceptions=True)
    cancelled = False
    while True:
        try:
            outcomes = await asyncio.shield(gathering)
            break
        except asyncio.CancelledError:
            cancelled = True
            if sisy.stopping:
                await _interrupt(
                    sisy, {run_id: run for run_id, run in runs.items() if not run.done()}
                )
                gathering.cancel()
                raise
    if cancelled:
        raise asyncio.CancelledError
    return list(outcomes)


async def _interrupt(sisy: SisyWorker, running: dict[int, asyncio.Task[str]]) -> None:
    if not running:
        return
    error = (
        "interrupted: the worker stopped before the callable returned "
        f"(it waited {sisy.shutdown_timeout:g} s); what the callable did is unknown"
    )
    interrupted = await sisy.store.interrupt_runs(
        sisy.pool.query, run_ids=list(running), error=error
    )
    for run in running.values():
        run.cancel()
    signals.finished(sisy.store.database_alias, interrupted)
    if interrupted:
        logger.error(
            f"Run(s) {', '.join(map(str, interrupted))} interrupted: the worker stopped before "
            "their callable returned",
            extra={"action": "runs_interrupted", "run_ids": interrupted},
        )


async def _run(context: JobContext, sisy: SisyWorker, started: StartedRun, ticket: int) -> str:
    """Run one started run's callable in a callable thread; record and log how it ended.

    In its OpenTelemetry span (sisy_pg.otel); signals run_finished once recorded.
    """
    if started.task is None:
        return _not_started(sisy, started)
    with otel.run_span(started.task, started, sisy.label) as span:
        status = await _run_callable(context, sisy, started, ticket)
        otel.run_ended(span, status)
    # Sent if the run ended (not for a retry, nor a Django task still running).
    signals.finished(sisy.store.database_alias, [started.run_id])
    return status


def _not_started(sisy: SisyWorker, started: StartedRun) -> str:
    """Log why sisy_start_run_v1 did not start a run; signal what this worker decided."""
    run_id = started.run_id
    if started.status in (RunStatus.MISSED, RunStatus.SKIPPED):
        signals.not_run(sisy.store.database_alias, [run_id])  # late, or overlap
    if started.status == NotStarted.BROKEN:
        signals.finished(sisy.store.database_alias, [run_id])
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


async def _run_callable(
    context: JobContext, sisy: SisyWorker, started: StartedRun, ticket: int
) -> str:
    store, query = sisy.store, sisy.pool.query
    run_id, task = started.run_id, started.task
    assert task is not None
    job = context.job
    call = functools.partial(
        _call,
        task.callable_info,
        _message(started, job_id=job.id, worker=sisy.label),
        store.database_alias,
        signals.announcer(run_id, store.database_alias),
    )
    thread = sisy.slots.threads.submit(call)
    # The slot is free when the thread is: not before, even if the run is
    # recorded timed out or interrupted meanwhile.
    thread.add_done_callback(lambda _: sisy.slots.give_back(ticket))
    timeout = task.policy.timeout
    try:
        outcome: Outcome = await asyncio.wait_for(asyncio.shield(thread), _given_up_after(timeout))
    except asyncio.TimeoutError:
        sisy.slots.mark_stuck(ticket)
        await store.time_out_runs_now(query, queue=job.queue, task_name=job.task_name)
        logger.warning(
            f"Run {run_id} of task {task.pk} ({printable(task.label)}): its callable is still "
            f"running past the task's timeout of {timeout:g} s. The run is recorded timed out; "
            "its thread cannot be stopped and keeps its slot, counted against the task's share, "
            "until it returns",
            extra={"action": "run_stuck", "run_id": run_id, "task_id": task.pk, "timeout": timeout},
        )
        sisy.when_returned(thread, _record_late_return(context, sisy, started))
        return RunStatus.TIMED_OUT
    otel.callable_raised(outcome.exception)
    return await _record(context, sisy, started, outcome)


def _message(started: StartedRun, *, job_id: int | None, worker: str) -> dict[str, Any]:
    """The argument of a run's callable: its task, and the messages that say which run it is."""
    task = started.task
    assert task is not None and started.scheduled_for is not None
    return {
        "task": task,
        # What Sisy's callables received: the Channels message that
        # started the run (the task's id and the instant, epoch seconds).
        "channel_message": {"id": task.pk, "ts": started.scheduled_for.timestamp()},
        "message": {
            "run_id": started.run_id,
            "scheduled_for": started.scheduled_for,
            "job_id": job_id,
            "worker": worker,
            "attempt": started.attempt,
        },
    }


def _given_up_after(timeout: float | None) -> float | None:
    """Seconds the runner waits for a callable with the task's ``timeout`` (None: for good).

    A little past the timeout: the planners close the run at it.
    """
    return None if timeout is None else timeout + 1.0


def _record_late_return(
    context: JobContext, sisy: SisyWorker, started: StartedRun
) -> Callable[[Outcome], Coroutine[Any, Any, Any]]:
    async def record(outcome: Outcome) -> None:
        await _record(context, sisy, started, outcome)

    return record


async def _record(
    context: JobContext, sisy: SisyWorker, started: StartedRun, outcome: Outcome
) -> str:
    """Record how a run's callable ended."""
    store, query, job = sisy.store, sisy.pool.query, context.job
    run_id, task = started.run_id, started.task
    assert task is not None
    log = _RunLog(run_id, task, started, outcome)
    if outcome.status == "broken":
        reason = str(outcome.exception)
        broke = await store.break_task(
            query, run_id=run_id, reason=reason, traceback=outcome.traceback
        )
        log.broken(reason, first=broke)
        return "broken"

    finish = functools.partial(
        store.finish_run, query, run_id=run_id, queue=job.queue, task_name=job.task_name
    )
    if outcome.enqueued is not None:
        return await _record_enqueue(finish, log, outcome.enqueued)
    exc = outcome.exception
    if exc is None:
        if not await finish(status=RunStatus.SUCCEEDED):
            log.returned_late(RunStatus.SUCCEEDED)
            return RunStatus.TIMED_OUT
        log.ended(RunStatus.SUCCEEDED)
        return RunStatus.SUCCEEDED

    error = _error_text(exc)
    retry_in = _retry_in(task.policy, exc, started.attempt)
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


def _error_text(exc: BaseException) -> str:
    """A failed run's error, as the history keeps it: the exception's type and message."""
    return f"{type(exc).__name__}: {exc}"


def _retry_in(policy: Policy, exc: BaseException, attempt: int | None) -> float | None:
    """Seconds before failed ``attempt`` (None: the first) is tried again, or None: it failed.

    An exception that stops the thread rather than fails the callable
    (SystemExit, KeyboardInterrupt) is not retried, nor an enqueue that may
    have taken its Django task (a second could run the instant twice).
    """
    retryable = isinstance(exc, Exception) and not isinstance(exc, task_targets.EnqueueUncertain)
    return policy.retry_in(attempt or 1) if retryable else None


async def _record_enqueue(
    finish: Callable[..., Awaitable[bool]], log: _RunLog, enqueued: task_targets.Enqueued
) -> str:
    """The run enqueued its Django task: it follows the result (sisy_pg.task_results) from now.

    A result already finished (a backend that runs the task in ``enqueue``)
    ends the run at once; so does one found finished when asked (a backend
    outside sisy-pg's database may finish the task before the run's record
    committed, its task_finished then found no run to end).
    """
    result = enqueued.result
    if not enqueued.recorded:
        log.not_enqueued(result)
        return RunStatus.TIMED_OUT
    log.enqueued(result)
    if not result.is_finished and not task_targets.commits_with_sisy(result.task.get_backend()):
        with contextlib.suppress(Exception):  # it is followed by its signals all the same
            await asyncio.to_thread(_refreshed, result)
    if not result.is_finished:
        return ENQUEUED
    status, error, traceback = task_targets.outcome_of(result)
    if await finish(status=status, error=error, traceback=traceback):
        log.ended(status)
    return status


def _refreshed(result: Any) -> None:
    """``result`` read again from its backend, in a thread whose connections are then closed."""
    try:
        result.refresh()
    finally:
        connections.close_all()


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

    def enqueued(self, result: Any) -> None:
        logger.info(
            f"{self.name}: enqueued its Django task as result {result.id} on backend "
            f"{result.backend!r} in {self.extra['duration_ms']:.1f} ms, lag {self.lag_ms:.1f} ms",
            extra={
                "action": "run_enqueued",
                "status": RunStatus.RUNNING,
                "task_result_id": str(result.id),
                "task_backend": result.backend,
                **self.extra,
            },
        )

    def not_enqueued(self, result: Any) -> None:
        logger.warning(
            f"{self.name}: closed (timed out, or its worker deemed lost) while its Django task "
            f"was enqueued on backend {result.backend!r}: "
            + (
                "the enqueue was rolled back with it"
                if task_targets.commits_with_sisy(result.task.get_backend())
                else f"result {result.id} was enqueued all the same (at most once)"
            ),
            extra={
                "action": "run_not_enqueued",
                "status": RunStatus.TIMED_OUT,
                "task_backend": result.backend,
                **self.extra,
            },
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
