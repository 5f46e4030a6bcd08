"""The planner: wakes just before the earliest ``next_run``, fires it, plans what changed.

One planner runs beside each procrastinate worker that serves the sisy queue
(see worker.py). It sleeps until SISY_LEAD_TIME before the earliest
``next_run`` in the table, or until the trigger on ``sisy_task`` notifies
``sisy_task_changed``, then in one transaction claims the tasks due by then
(inserting their runs and procrastinate jobs, whose insert wakes every worker
at once) and stores each task's following instant. The runner holds each job
until its instant, so runs start on time rather than one round trip late. Several planners may run: ``FOR NO KEY UPDATE SKIP LOCKED`` shares the
due rows between them and the unique (task, instant) constraint on the run
history makes a double fire impossible.

Every query here touches only rows that are due or changed, through partial
indexes: the cost follows what is due, not how many tasks are defined.

The planner also says what would otherwise stop the clock silently
(liveness.py): a statement stalled longer than SISY_STALL_WARNING, with its
cause; notifications that never reach its LISTEN connection (a pooler in
transaction mode), found by a self-addressed probe, after which it polls
every SISY_POLL_INTERVAL; and, in the planner doing the cluster's
housekeeping, overload (more instants due than executed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import DictRow

from . import backfill, conf, liveness, otel, policies, schedule, signals
from .liveness import Notifications
from .store import PlannerState, Store
from .vocabulary import RunStatus

logger = logging.getLogger(__name__)

TASK_CHANNEL = "sisy_task_changed"
# When another planner holds the due rows, wait this long (or for its
# commit's notification, whichever comes first) before looking again.
_CONTENDED_RETRY = 0.05
# Seconds between attempts while the database is away: short, so that
# firing resumes within seconds of its return (the last one repeats).
_RECONNECT_DELAYS = (0.5, 1, 2)


class Planner:
    def __init__(
        self,
        store: Store,
        *,
        queue: str,
        task_name: str,
        lead_time: float,
        max_sleep: float,
        batch_size: int,
        runs_per_job: int,
        retention_days: float | None = None,
        stalled_worker_timeout: float,
        missed_all_limit: int = 100,
        wake_worker: Callable[[], Awaitable[None]] | None = None,
        stall_warning: float | None = None,
        notify_probe_interval: float | None = None,
        poll_interval: float | None = None,
        listen_database: str | None = None,
    ) -> None:
        """The liveness arguments default to their SISY_* settings (conf.py).

        ``wake_worker`` is awaited after a claim that queued runs, so that
        this worker fetches their jobs at once, and on every poll while
        notifications are lost.
        """
        settings = conf.settings
        self.store = store
        self.queue = queue
        self.task_name = task_name
        self.lead_time = lead_time
        self.missed_all_limit = missed_all_limit
        # The longest sleep, and the period of the cluster's housekeeping:
        # short enough to close a dead worker's runs soon after procrastinate
        # deems it stalled.
        self.max_sleep = min(max_sleep, stalled_worker_timeout / 2)
        self.batch_size = batch_size
        self.runs_per_job = runs_per_job
        self.retention = dt.timedelta(days=retention_days) if retention_days else None
        self.stalled_after = dt.timedelta(seconds=stalled_worker_timeout)
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sisy-planner"
        )
        self._housekeeping_at = float("-inf")
        self._failures = 0
        self._failed_at = 0.0  # loop time of the first failure of an outage
        self.wake_worker = wake_worker
        self.stall_watch = liveness.StallWatch(
            store, settings.STALL_WARNING if stall_warning is None else stall_warning
        )
        self.poll_interval = float(
            settings.POLL_INTERVAL if poll_interval is None else poll_interval
        )
        self.listen_database: str | None = (
            settings.LISTEN_DATABASE if listen_database is None else listen_database
        )
        self.probe = liveness.NotificationProbe(
            float(
                settings.NOTIFY_PROBE_INTERVAL
                if notify_probe_interval is None
                else notify_probe_interval
            ),
            poll_interval=self.poll_interval,
            listen_database=self.listen_database,
        )
        # Whether this planner did the cluster's housekeeping last time it
        # asked: then it also watches the load.
        self._housekeeper = False
        self.overload = liveness.OverloadWatch()
        self._load_checked_at = float("-inf")
        self._fired_since_load_check = 0

    @property
    def notifications(self) -> str:
        """Whether notifications reach this planner's LISTEN connection: unknown, ok or lost."""
        return self.probe.state.value

    async def run(self) -> None:
        """Plan and fire until cancelled; survive database restarts."""
        logger.debug("sisy planner running", extra={"action": "planner_running"})
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                self._executor.shutdown(wait=False)
                logger.info("sisy planner stopped", extra={"action": "planner_stop"})
                raise
            except Exception as exc:
                delay = _reconnect_delay(self._failures)
                self._failures += 1
                cause = liveness.failure_cause(exc)
                if self._failures == 1:
                    self._failed_at = asyncio.get_running_loop().time()
                # The first failure of an outage with its traceback; the retries quietly.
                logger.log(
                    logging.ERROR if self._failures == 1 else logging.DEBUG,
                    f"sisy planner failed: {cause}; retrying in {delay} s",
                    exc_info=exc if self._failures == 1 else None,
                    extra={
                        "action": "planner_error",
                        "cause": cause,
                        "exception": repr(exc),
                        "retry_in": delay,
                    },
                )
                await asyncio.sleep(delay)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        async with (
            await self.store.connect() as conn,
            await self.store.connect(self.listen_database) as listen_conn,
        ):
            await listen_conn.execute(f"LISTEN {TASK_CHANNEL}")
            listener = asyncio.create_task(self._listen(listen_conn), name="sisy-listen")
            self.probe.restart()
            ticked_at = tick_at = loop.time()
            try:
                while True:
                    tick_at = _tick_due_at(
                        tick_at,
                        ticked_at,
                        polling=self.probe.state is Notifications.LOST,
                        poll_interval=self.poll_interval,
                    )
                    if self._wake.is_set() or loop.time() >= tick_at:
                        self._wake.clear()
                        delay = await self.tick(conn)
                        if self._failures:
                            down = loop.time() - self._failed_at
                            logger.info(
                                f"sisy planner back after {down:.1f} s ({self._failures} "
                                "failed attempt(s))",
                                extra={"action": "planner_back", "seconds": round(down, 3)},
                            )
                        self._failures = 0
                        if self.probe.state is Notifications.LOST:
                            await self._wake_worker()
                        ticked_at = loop.time()
                        tick_at = ticked_at + delay
                    await self._probe(conn)
                    # A probe's own wake-ups cost its NOTIFY alone, not a tick.
                    await self._sleep(
                        min(tick_at - loop.time(), self.probe.seconds_to_next(loop.time())),
                        listener,
                    )
                    self.probe.check(loop.time())
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, listen_conn: psycopg.AsyncConnection[DictRow]) -> None:
        async for notify in listen_conn.notifies():
            # A probe (this planner's or another's) is no change to plan.
            if not self.probe.received(notify.payload):
                self._wake.set()

    async def _probe(self, conn: psycopg.AsyncConnection[DictRow]) -> None:
        """Send the probe due, if one is: a NOTIFY this planner's LISTEN connection must get."""
        payload = self.probe.next_payload(asyncio.get_running_loop().time())
        if payload is not None:
            async with self.stall_watch.watch(conn, "probe"):
                await self.store.send_probe(conn, payload)

    async def _wake_worker(self) -> None:
        if self.wake_worker is None:
            return
        try:
            await self.wake_worker()
        except Exception as exc:  # the worker's business: the planner goes on
            logger.warning(
                f"sisy planner could not wake its worker: {exc!r}",
                extra={"action": "wake_worker_failed", "exception": repr(exc)},
            )

    async def _sleep(self, delay: float, listener: asyncio.Task[Any]) -> None:
        if delay > 0 and not self._wake.is_set():
            waiter = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait(
                    {waiter, listener}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
        if listener.done():
            exc = None if listener.cancelled() else listener.exception()
            detail = f" ({liveness.first_line(exc)})" if exc else ""
            raise ConnectionError(f"its LISTEN connection was lost{detail}") from exc

    async def tick(self, conn: psycopg.AsyncConnection[DictRow]) -> float:
        """Fire what is due, plan what is pending; return seconds to sleep.

        Each statement is watched: one stalled past SISY_STALL_WARNING is
        logged with its cause.
        """
        watch = self.stall_watch.watch
        async with watch(conn, "claim"):
            fired = await self.fire_due(conn)
        self._fired_since_load_check += fired
        async with watch(conn, "housekeeping"):
            await self.housekeeping(conn)
            await self.watch_load(conn)
        async with watch(conn, "plan"):
            planned = await self.plan_pending(conn)
        async with watch(conn, "state"):
            state = await self.store.planner_state(conn)
        if _deadline_passed(state):
            async with watch(conn, "time-out"):
                await self.time_out_runs(conn)
            async with watch(conn, "state"):
                state = await self.store.planner_state(conn)
        if state.backfills:
            async with watch(conn, "backfill"):
                await self.expand_backfills(conn)
        if _release_due(state, self.lead_time):
            async with watch(conn, "release"):
                await self.release_jittered_runs(conn)
            async with watch(conn, "state"):
                state = await self.store.planner_state(conn)
        ended = 0
        if _pause_ended(state):
            async with watch(conn, "pause-end"):
                ended = await self.end_pauses(conn)
        return _seconds_to_sleep(
            state,
            lead_time=self.lead_time,
            max_sleep=self.max_sleep,
            claimed_full_batch=fired >= self.batch_size,
            planned=planned,
            pauses_ended=ended,
        )

    async def release_jittered_runs(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Defer the jobs of the runs held for their jitter that are due within the lead time.

        Any planner may (rows another one holds are skipped). Wakes this
        worker's fetch, as a fire does.
        """
        released = await self.store.release_jittered_runs(
            conn,
            lead=dt.timedelta(seconds=self.lead_time),
            queue=self.queue,
            task_name=self.task_name,
            runs_per_job=self.runs_per_job,
        )
        if released:
            logger.debug(
                f"Released {released} run(s) held for their jitter",
                extra={"action": "jittered_runs_released", "count": released},
            )
            await self._wake_worker()
        return released

    async def expand_backfills(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Compute the instants of the backfills asked in SQL and queue their runs.

        A backfill asked through manage.py sisy or the admin is computed by
        its asker; one asked in psql (sisy_backfill_v1) waits for a planner.
        Any planner may: each is computed once (its row locked, then marked).
        """
        async with conn.transaction():
            pending = await self.store.pending_backfills(conn, limit=self.batch_size)
            if not pending:
                return 0
            # Cron arithmetic, up to SISY_BACKFILL_LIMIT instants each: off the loop.
            computed = await asyncio.get_running_loop().run_in_executor(
                self._executor, backfill.compute_all, pending
            )
            for row, (instants, error) in zip(pending, computed, strict=True):
                stored = await self.store.store_backfill(
                    conn,
                    backfill_id=row["id"],
                    instants=instants,
                    error=error,
                    queue=self.queue,
                    task_name=self.task_name,
                )
                backfill.log_stored(row["id"], row["task_id"], stored)
        return len(pending)

    async def end_pauses(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Resume the tasks whose pause ended, on the database's clock; how many pauses ended.

        Any planner may: each pause ends once (its row goes in the statement
        that resumes the task), and rows another transaction holds are left
        for the next tick.
        """
        ended = await self.store.end_pauses(conn, limit=self.batch_size)
        for row in ended:
            extra = {
                "action": "pause_ended",
                "task_id": row["task_id"],
                "until": row["until"].isoformat(),
                "resumed": row["resumed"],
            }
            if row["resumed"]:
                logger.info(
                    f"Task {row['task_id']}: its pause ended ({row['until'].isoformat()}), resumed",
                    extra=extra,
                )
            else:
                logger.info(
                    f"Task {row['task_id']}: its pause ended ({row['until'].isoformat()}), "
                    f"not resumed: {row['refusal']}",
                    extra={**extra, "refusal": row["refusal"]},
                )
        return len(ended)

    async def time_out_runs(self, conn: psycopg.AsyncConnection[DictRow]) -> None:
        """Close the runs past their task's timeout (any planner may; it is idempotent)."""
        began = otel.now()
        count = await self.store.time_out_runs(conn, queue=self.queue, task_name=self.task_name)
        if count:
            otel.planner_step("time_out", began, runs_timed_out=count)
            logger.warning(
                f"{count} run(s) timed out (still running past their task's timeout)",
                extra={"action": "runs_timed_out", "count": count},
            )

    async def housekeeping(
        self, conn: psycopg.AsyncConnection[DictRow], force: bool = False
    ) -> None:
        """Close runs that can no longer happen, prune old history.

        Done by one planner of the cluster per ``max_sleep`` (the database
        decides which), or at once with ``force``.
        """
        loop_time = asyncio.get_running_loop().time()
        if not force and loop_time - self._housekeeping_at < self.max_sleep:
            return
        self._housekeeping_at = loop_time
        began = otel.now()
        every = dt.timedelta(seconds=self.max_sleep)
        self._housekeeper = force or await self.store.housekeeping_due(conn, every=every)
        if not self._housekeeper:
            self.overload.reset()
            return
        # Runs left 'running' by a dead worker would block no-overlap tasks.
        orphans = await self.store.fail_orphaned_runs(
            conn, stalled_after=self.stalled_after, queue=self.queue, task_name=self.task_name
        )
        if orphans:
            logger.warning(
                f"Closed {orphans} run(s) that can no longer happen (dead worker or job)",
                extra={"action": "orphaned_runs_failed", "count": orphans},
            )
        pruned = 0
        if self.retention is not None:
            pruned = await self.store.prune_runs(
                conn, retention=self.retention, limit=10 * self.batch_size
            )
            if pruned:
                logger.info(
                    f"Pruned {pruned} old run(s)",
                    extra={"action": "runs_pruned", "count": pruned},
                )
            # The changes of tasks are kept as long as the history (docs/audit.md).
            changes = await self.store.prune_task_changes(
                conn, retention=self.retention, limit=10 * self.batch_size
            )
            if changes:
                logger.info(
                    f"Pruned {changes} old change(s) of tasks",
                    extra={"action": "task_changes_pruned", "count": changes},
                )
        if orphans or pruned:
            otel.planner_step("housekeeping", began, runs_closed=orphans, runs_pruned=pruned)

    async def watch_load(
        self, conn: psycopg.AsyncConnection[DictRow], force: bool = False
    ) -> liveness.Load | None:
        """Check the cluster's load, if this planner does the housekeeping; the load read.

        Every LOAD_CHECK_EVERY s (or at once with ``force``), over as many
        seconds. One planner watches the cluster's load so that overload is
        said once (liveness.OverloadWatch has the rule); a planner that no
        longer does the housekeeping forgets its checks. An idle planner
        (nothing fired since its last check, no overload said) spares the
        statement: a loaded cluster keeps every planner firing.
        """
        loop_time = asyncio.get_running_loop().time()
        if not force and not _load_check_due(
            loop_time - self._load_checked_at,
            housekeeper=self._housekeeper,
            fired=self._fired_since_load_check,
            overloaded=self.overload.overloaded,
        ):
            return None
        self._load_checked_at = loop_time
        self._fired_since_load_check = 0
        load = await self.store.load(conn, window=dt.timedelta(seconds=liveness.LOAD_CHECK_EVERY))
        self.overload.judge(load)
        return load

    async def fire_due(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Claim due tasks, decide what each instant gets, record it all: one transaction."""
        began = otel.now()
        async with conn.transaction():
            claimed = await self.store.claim_due(
                conn,
                limit=self.batch_size,
                lead=dt.timedelta(seconds=self.lead_time),
                stalled_after=self.stalled_after,
            )
            if not claimed:
                return 0
            # Cron arithmetic is CPU work: off the worker's event loop, in a
            # thread of its own (the loop's default pool runs the sync jobs,
            # and a planner waiting behind them would fire late).
            decide = functools.partial(
                _decide_all,
                claimed,
                lead=dt.timedelta(seconds=self.lead_time),
                all_limit=self.missed_all_limit,
            )
            decisions = await asyncio.get_running_loop().run_in_executor(self._executor, decide)
            records, plans = _records_and_plans(claimed, decisions)
            queued = await self.store.store_decisions(
                conn,
                queue=self.queue,
                task_name=self.task_name,
                runs_per_job=self.runs_per_job,
                records=records,
                plans=plans,
            )
        for task_id, record in records:
            _log_decision(task_id, record)
        signals.decided(self.store.database_alias, records)
        not_run = sum(record.status != RunStatus.QUEUED for _, record in records)
        otel.planner_step("claim", began, tasks=len(claimed), runs_queued=queued, not_run=not_run)
        if queued:
            # Committed: this worker may fetch their jobs without waiting
            # for procrastinate's notification.
            await self._wake_worker()
        return len(claimed)

    async def plan_pending(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Compute next_run for tasks that are new or were changed by a writer."""
        began = otel.now()
        async with conn.transaction():
            pending = await self.store.tasks_to_plan(conn, limit=self.batch_size)
            plans = _plan_all(pending)
            await self.store.store_decisions(
                conn,
                queue=self.queue,
                task_name=self.task_name,
                runs_per_job=self.runs_per_job,
                records=[],
                plans=plans,
            )
        if plans:
            logger.debug(
                f"Planned {len(plans)} task(s)",
                extra={"action": "tasks_planned", "task_ids": list(plans)},
            )
            otel.planner_step("plan", began, tasks=len(plans))
        return len(plans)


def _reconnect_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row (0: the first failure)."""
    return _RECONNECT_DELAYS[min(failures, len(_RECONNECT_DELAYS) - 1)]


def _tick_due_at(tick_at: float, ticked_at: float, *, polling: bool, poll_interval: float) -> float:
    """When the next tick is due: when the last one (at ``ticked_at``) said, or sooner if polling.

    While notifications are lost (a pooler drops them), none will say that
    something changed: the planner ticks every ``poll_interval`` at least.
    """
    return min(tick_at, ticked_at + poll_interval) if polling else tick_at


def _deadline_passed(state: PlannerState) -> bool:
    """A run is past its task's timeout: the tick closes it."""
    return state.seconds_to_deadline is not None and state.seconds_to_deadline <= 0


def _release_due(state: PlannerState, lead_time: float) -> bool:
    """A run held for its jitter is due within the lead time: the tick defers its job."""
    return state.seconds_to_release is not None and state.seconds_to_release <= lead_time


def _pause_ended(state: PlannerState) -> bool:
    """A task's pause reached its end: the tick resumes it."""
    return state.seconds_to_pause_end is not None and state.seconds_to_pause_end <= 0


def _seconds_to_sleep(
    state: PlannerState,
    *,
    lead_time: float,
    max_sleep: float,
    claimed_full_batch: bool,
    planned: int,
    pauses_ended: int,
) -> float:
    """How long to sleep after a tick that left ``state`` (its seconds from the database's now).

    Until the first thing due: an instant to claim (``lead_time`` ahead), a
    run's timeout, a pause's end, a jittered run to release; ``max_sleep`` at
    most. 0 when there is more to do at once; _CONTENDED_RETRY when what is
    due is held by another transaction, whose commit notifies us anyway.
    """
    if _pause_ended(state):
        # The tasks resumed wait to be planned: at once (or soon, when
        # another transaction holds their rows: its commit notifies us).
        return 0.0 if pauses_ended else _CONTENDED_RETRY
    if state.pending:
        # More than one batch was waiting (go on at once), or another
        # planner holds those rows (its commit will notify us).
        return 0.0 if planned else _CONTENDED_RETRY
    delay = max_sleep
    if state.seconds_to_deadline is not None:
        delay = min(delay, max(state.seconds_to_deadline, 0.0))
    if state.seconds_to_pause_end is not None:
        delay = min(delay, state.seconds_to_pause_end)
    if state.seconds_to_release is not None:
        # Runs held for their jitter: released a lead time ahead, as fires
        # are claimed (still due after a release: rows another planner holds).
        release_in = state.seconds_to_release - lead_time
        delay = min(delay, release_in if release_in > 0 else _CONTENDED_RETRY)
    if state.seconds_to_next is None:
        return delay
    seconds_to_claim = state.seconds_to_next - lead_time
    if seconds_to_claim <= 0:
        # Still due after our claim: rows another planner holds, or a
        # batch too small. Retry soon; its commit notifies us anyway.
        return 0.0 if claimed_full_batch else _CONTENDED_RETRY
    return min(seconds_to_claim, delay)


def _load_check_due(
    seconds_since_check: float, *, housekeeper: bool, fired: int, overloaded: bool
) -> bool:
    """Whether a planner checks the cluster's load now (see Planner.watch_load)."""
    return (
        housekeeper
        and seconds_since_check >= liveness.LOAD_CHECK_EVERY
        and bool(fired or overloaded)
    )


def _decide_all(
    claimed: list[policies.Due], *, lead: dt.timedelta, all_limit: int
) -> list[policies.Decision | schedule.ScheduleError]:
    """The decision for each task claimed, or why it cannot be planned."""
    decisions: list[policies.Decision | schedule.ScheduleError] = []
    for due in claimed:
        try:
            decisions.append(policies.decide(due, lead=lead, all_limit=all_limit))
        except Exception as exc:  # one bad row must not stop the others
            decisions.append(_unplannable(due.task_id, exc))
    return decisions


def _records_and_plans(
    claimed: list[policies.Due], decisions: list[policies.Decision | schedule.ScheduleError]
) -> tuple[list[tuple[int, policies.Record]], dict[int, schedule.Plan | schedule.ScheduleError]]:
    """What store_decisions writes: the rows of the history, and each task's next plan.

    A task that cannot be planned records nothing; its error is its plan.
    """
    records = [
        (due.task_id, record)
        for due, decision in zip(claimed, decisions, strict=True)
        if not isinstance(decision, schedule.ScheduleError)
        for record in decision.records
    ]
    plans = {
        due.task_id: decision if isinstance(decision, schedule.ScheduleError) else decision.plan
        for due, decision in zip(claimed, decisions, strict=True)
    }
    return records, plans


def _plan_all(
    pending: list[tuple[int, schedule.PlanInput, dt.datetime]],
) -> dict[int, schedule.Plan | schedule.ScheduleError]:
    """The plan of each task new or changed, from the database's now, or why it has none."""
    plans: dict[int, schedule.Plan | schedule.ScheduleError] = {}
    for task_id, plan_input, now in pending:
        try:
            plans[task_id] = schedule.plan_from_now(plan_input, now)
        except Exception as exc:  # one bad row must not stop the others
            plans[task_id] = _unplannable(task_id, exc)
    return plans


def _log_decision(task_id: int, record: policies.Record) -> None:
    extra = {"task_id": task_id, "scheduled_for": record.instant.isoformat()}
    if record.status == RunStatus.QUEUED:
        logger.info(
            f"Fired task {task_id} for {record.instant.isoformat()}",
            extra={"action": "task_fired", **extra},
        )
    else:
        # Missed instants are news (workers were down or too busy); a
        # coalesced or overlapping fire is the policy working as asked.
        level = logging.WARNING if record.status == RunStatus.MISSED else logging.INFO
        logger.log(
            level,
            f"Task {task_id}: {record.error}",
            extra={"action": f"task_{record.details.get('reason', record.status)}", **extra},
        )


def _unplannable(task_id: int, exc: Exception) -> schedule.ScheduleError:
    """Log why a task cannot be planned; the error is stored in its error column."""
    error = exc if isinstance(exc, schedule.ScheduleError) else schedule.ScheduleError(repr(exc))
    logger.error(
        f"Task {task_id} cannot be planned: {error}",
        extra={"action": "task_unplannable", "task_id": task_id, "error": str(error)},
    )
    return error
