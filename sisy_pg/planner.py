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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
from typing import Any

import psycopg
from psycopg.rows import DictRow

from . import policies, schedule
from .store import Store
from .vocabulary import RunStatus

logger = logging.getLogger(__name__)

TASK_CHANNEL = "sisy_task_changed"
# When another planner holds the due rows, wait this long (or for its
# commit's notification, whichever comes first) before looking again.
_CONTENDED_RETRY = 0.05
_RECONNECT_DELAYS = (0.5, 1, 2, 5, 10)


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
    ) -> None:
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
                delay = _RECONNECT_DELAYS[min(self._failures, len(_RECONNECT_DELAYS) - 1)]
                self._failures += 1
                logger.exception(
                    f"sisy planner failed, retrying in {delay} s",
                    extra={"action": "planner_error", "exception": repr(exc), "retry_in": delay},
                )
                await asyncio.sleep(delay)

    async def _serve(self) -> None:
        async with await self.store.connect() as conn, await self.store.connect() as listen_conn:
            await listen_conn.execute(f"LISTEN {TASK_CHANNEL}")
            listener = asyncio.create_task(self._listen(listen_conn), name="sisy-listen")
            try:
                while True:
                    delay = await self.tick(conn)
                    self._failures = 0
                    await self._sleep(delay, listener)
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, listen_conn: psycopg.AsyncConnection[DictRow]) -> None:
        async for _ in listen_conn.notifies():
            self._wake.set()

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
            listener.result()  # re-raise a lost LISTEN connection
            raise ConnectionError("the LISTEN connection closed")
        self._wake.clear()

    async def tick(self, conn: psycopg.AsyncConnection[DictRow]) -> float:
        """Fire what is due, plan what is pending; return seconds to sleep."""
        fired = await self.fire_due(conn)
        await self.housekeeping(conn)
        planned = await self.plan_pending(conn)
        state = await self.store.planner_state(conn)
        if state.seconds_to_deadline is not None and state.seconds_to_deadline <= 0:
            await self.time_out_runs(conn)
            state = await self.store.planner_state(conn)
        if state.pending:
            # More than one batch was waiting (go on at once), or another
            # planner holds those rows (its commit will notify us).
            return 0.0 if planned else _CONTENDED_RETRY
        delay = self.max_sleep
        if state.seconds_to_deadline is not None:
            delay = min(delay, max(state.seconds_to_deadline, 0.0))
        if state.seconds_to_next is None:
            return delay
        seconds_to_claim = state.seconds_to_next - self.lead_time
        if seconds_to_claim <= 0:
            # Still due after our claim: rows another planner holds, or a
            # batch too small. Retry soon; its commit notifies us anyway.
            return 0.0 if fired >= self.batch_size else _CONTENDED_RETRY
        return min(seconds_to_claim, delay)

    async def time_out_runs(self, conn: psycopg.AsyncConnection[DictRow]) -> None:
        """Close the runs past their task's timeout (any planner may; it is idempotent)."""
        count = await self.store.time_out_runs(conn, queue=self.queue, task_name=self.task_name)
        if count:
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
        every = dt.timedelta(seconds=self.max_sleep)
        if not force and not await self.store.housekeeping_due(conn, every=every):
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
        if self.retention is not None:
            pruned = await self.store.prune_runs(
                conn, retention=self.retention, limit=10 * self.batch_size
            )
            if pruned:
                logger.info(
                    f"Pruned {pruned} old run(s)",
                    extra={"action": "runs_pruned", "count": pruned},
                )

    async def fire_due(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Claim due tasks, decide what each instant gets, record it all: one transaction."""
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
            decisions = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._decide_all, claimed
            )
            records = [
                (due.task_id, record)
                for due, decision in zip(claimed, decisions, strict=True)
                if not isinstance(decision, schedule.ScheduleError)
                for record in decision.records
            ]
            plans = {
                due.task_id: decision
                if isinstance(decision, schedule.ScheduleError)
                else decision.plan
                for due, decision in zip(claimed, decisions, strict=True)
            }
            await self.store.store_decisions(
                conn,
                queue=self.queue,
                task_name=self.task_name,
                runs_per_job=self.runs_per_job,
                records=records,
                plans=plans,
            )
        for task_id, record in records:
            _log_decision(task_id, record)
        return len(claimed)

    def _decide_all(
        self, claimed: list[policies.Due]
    ) -> list[policies.Decision | schedule.ScheduleError]:
        lead = dt.timedelta(seconds=self.lead_time)
        decisions: list[policies.Decision | schedule.ScheduleError] = []
        for due in claimed:
            try:
                decisions.append(policies.decide(due, lead=lead, all_limit=self.missed_all_limit))
            except Exception as exc:  # one bad row must not stop the others
                decisions.append(_unplannable(due.task_id, exc))
        return decisions

    async def plan_pending(self, conn: psycopg.AsyncConnection[DictRow]) -> int:
        """Compute next_run for tasks that are new or were changed by a writer."""
        async with conn.transaction():
            pending = await self.store.tasks_to_plan(conn, limit=self.batch_size)
            plans: dict[int, schedule.Plan | schedule.ScheduleError] = {}
            for task_id, plan_input, now in pending:
                try:
                    plans[task_id] = schedule.plan_from_now(plan_input, now)
                except Exception as exc:  # one bad row must not stop the others
                    plans[task_id] = _unplannable(task_id, exc)
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
        return len(plans)


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
