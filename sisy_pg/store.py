"""The one object that issues sisy-pg's SQL (the named queries of ``sql/queries.sql``).

The planner talks to it over its own asynchronous psycopg connection; the
runner, an asynchronous procrastinate task, over a small pool of autocommit
connections of the worker it runs in (:meth:`Store.runner_query`). Both see
the same queries, which call the versioned SQL functions (``sisy_*_v1``) of
the schema.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import limits, policies, procrastinate_seam, schedule, sql_files
from .vocabulary import NotStarted

if TYPE_CHECKING:
    from . import liveness
    from .models import Task

logger = logging.getLogger(__name__)


#: The most connections a worker's runners hold (start and finish statements).
RUNNER_POOL_MAX = 8

#: Runs one statement and returns its rows.
Query = Callable[[str, dict[str, Any]], Awaitable[list[DictRow]]]


@dataclasses.dataclass(frozen=True)
class PlannerState:
    seconds_to_next: float | None
    seconds_to_deadline: float | None
    pending: bool
    seconds_to_pause_end: float | None = None
    seconds_to_release: float | None = None  # the earliest run held for its jitter
    backfills: bool = False  # backfills asked in SQL wait for their instants


@dataclasses.dataclass(frozen=True)
class StartedRun:
    """What sisy_start_run_v1 made of a run; ``task`` is set when it runs."""

    run_id: int
    status: str
    scheduled_for: dt.datetime | None
    attempt: int | None
    started_at: dt.datetime | None
    wait: float | None  # seconds to wait before trying again: an 'early' or 'busy' run
    task: Task | None


def _plan_input(row: dict[str, Any]) -> schedule.PlanInput:
    return schedule.PlanInput(
        schedule=row["schedule"],
        timezone=row["timezone"],
        start_running=row["start_running"],
        end_running=row["end_running"],
        iterations=row["iterations"],
        fire_count=row["fire_count"],
        wait_for_schedule=row["wait_for_schedule"],
    )


def due_from_row(row: dict[str, Any]) -> policies.Due:
    """A row of the query claim_due, for policies.decide."""
    waiting = running = None
    if row["waiting_run_id"] is not None:
        waiting = policies.OtherRun(row["waiting_run_id"], row["waiting_for"], row["waiting_count"])
    if row["running_run_id"] is not None:
        running = policies.OtherRun(row["running_run_id"], row["running_for"])
    return policies.Due(
        task_id=row["id"],
        plan_input=_plan_input(row),
        # An UnreadableJSON (a row beyond the limits, written before them):
        # the defaults; its run breaks the task (sisy_start_run_v1).
        policy=policies.Policy.of(
            row["options"] if isinstance(row["options"], dict) else {}, row["allow_overlap"]
        ),
        instant=row["instant"],
        claimed_at=row["claimed_at"],
        waiting=waiting,
        running=running,
    )


def decision_params(
    queue: str,
    task_name: str,
    records: list[tuple[int, policies.Record]],
    plans: dict[int, schedule.Plan | schedule.ScheduleError],
    runs_per_job: int = 1,
) -> dict[str, Any]:
    """The parameters of the query store_decisions."""
    return {
        "queue": queue,
        "runs_per_job": runs_per_job,
        "task_name": task_name,
        "run_task_ids": [task_id for task_id, _ in records],
        "run_instants": [r.instant for _, r in records],
        "run_statuses": [r.status for _, r in records],
        "run_errors": [r.error for _, r in records],
        "run_details": [Jsonb(r.details) for _, r in records],
        "plan_task_ids": list(plans),
        "plan_next_runs": [
            None if isinstance(p, schedule.ScheduleError) else p.next_run for p in plans.values()
        ],
        "plan_finished": [
            not isinstance(p, schedule.ScheduleError) and p.finished for p in plans.values()
        ],
        "plan_errors": [
            str(p) if isinstance(p, schedule.ScheduleError) else "" for p in plans.values()
        ],
    }


class RunnerPool:
    """A worker's connections for its runners' statements: start, finish, retry, report.

    Autocommit, and not checked before each use: one round trip per
    statement, where procrastinate's own pool spends three (check, statement,
    commit). A run holds one for a single statement, so a few serve a worker
    of any ``--concurrency``: at most :data:`RUNNER_POOL_MAX`.

    A statement that fails for the database's sake (a lost connection, a
    server restarting or refusing connections, a read-only database after a
    failover) is sent again until it succeeds or ``outage_tolerance`` seconds
    have passed: each statement is safe to repeat (a start repeated by the
    same job runs the run once; a finish repeated finds it finished). The
    first failure checks every idle connection and replaces the dead ones;
    an outage is logged once when it starts (with its cause) and once when
    it ends.
    """

    RETRY_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)
    # How long a statement waits for a free connection before that counts as a failure.
    CONNECTION_TIMEOUT = 2.0

    def __init__(
        self,
        params: dict[str, Any],
        size: int,
        *,
        outage_tolerance: float,
        stall_warning: float = 2.0,
        on_back: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._kwargs = {
            **params,
            "application_name": "sisy-runner",
            "autocommit": True,
            "row_factory": dict_row,
        }
        self._size = max(1, min(size, RUNNER_POOL_MAX))
        self._pool = self._new_pool()
        self._renewed_at = float("-inf")
        self._closing: set[asyncio.Task[None]] = set()  # old pools closing
        self._opened = False
        self.stall_warning = stall_warning
        self.on_back = on_back  # awaited once the database answers again after an outage
        self._stalls: dict[str, float] = {}  # statement: loop time it started, while stalled
        self.outage_tolerance = outage_tolerance
        self.outage_since: float | None = None  # loop time of the first failure of an outage
        self._outage_said = False  # its WARNING is logged (a second failure)

    def _new_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
        return AsyncConnectionPool(
            kwargs=self._kwargs,
            connection_class=psycopg.AsyncConnection[DictRow],
            min_size=1,
            max_size=self._size,
            name="sisy-runner",
            timeout=self.CONNECTION_TIMEOUT,
            open=False,
        )

    async def _renew(self) -> None:
        """A new pool: psycopg_pool backs off between reconnections (up to minutes), we must not."""
        now = asyncio.get_running_loop().time()
        if now - self._renewed_at < 1.0:  # statements failing together renew it once
            return
        self._renewed_at = now
        old, self._pool = self._pool, self._new_pool()
        await self._pool.open()
        closing = asyncio.get_running_loop().create_task(old.close(timeout=0))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def query(self, sql: str, params: dict[str, Any]) -> list[DictRow]:
        """Run one statement; its rows. Retried through an outage (see the class)."""
        loop = asyncio.get_running_loop()
        failures = 0
        started = loop.time()
        try:
            while True:
                if not self._opened:
                    self._opened = True
                    await self._pool.open()
                stalled = loop.call_later(self.stall_warning, self._stalled, sql, started)
                try:
                    async with self._pool.connection() as conn:
                        cursor = await conn.execute(sql, params)
                        rows = await cursor.fetchall()
                except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction) as exc:
                    if isinstance(exc, PoolTimeout):
                        # No connection free in time: all busy (a stall, which
                        # _stalled says: wait on), or none to be had (an outage).
                        if await self._database_answers():
                            continue
                    elif not procrastinate_seam.database_away(exc):
                        raise  # the statement's own failure, not the database's absence
                    await self._outage(exc, failures)
                    failures += 1
                    continue
                finally:
                    stalled.cancel()
                if self.outage_since is not None:
                    await self._outage_ended()
                return rows
        finally:
            self._stall_ended(sql, loop.time())

    async def _outage(self, exc: BaseException, failures: int) -> None:
        """A statement failed for the database's absence: say so once, wait, renew; or give up."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.outage_since is None:
            self.outage_since = now
            if failures == 0:
                # Often one connection killed while idle: drop the dead ones, retry.
                await self._pool.check()
        elif not self._outage_said:
            self._outage_said = True
            logger.warning(
                f"sisy's runners cannot write to the database ({_cause(exc)}); "
                f"their statements are retried for up to {self.outage_tolerance:g} s",
                extra={"action": "database_outage", "exception": _cause(exc)},
            )
        if now - self.outage_since > self.outage_tolerance:
            raise exc
        await asyncio.sleep(self.RETRY_DELAYS[min(failures, len(self.RETRY_DELAYS) - 1)])
        if failures and self._pool.get_stats().get("pool_available", 0) == 0:
            await self._renew()

    async def _outage_ended(self) -> None:
        assert self.outage_since is not None
        took = asyncio.get_running_loop().time() - self.outage_since
        self.outage_since = None
        if self._outage_said:
            self._outage_said = False
            logger.info(
                f"sisy's runners write to the database again, after {took:.1f} s",
                extra={"action": "database_back", "seconds": round(took, 3)},
            )
            if self.on_back is not None:
                await self.on_back()

    async def _database_answers(self) -> bool:
        """Whether a new connection can be had now (the pool's wait was for a busy one)."""
        try:
            conn = await psycopg.AsyncConnection.connect(**{**self._kwargs, "connect_timeout": 2})
        except psycopg.Error:
            return False
        await conn.close()
        return True

    def _stalled(self, sql: str, since: float) -> None:
        """A statement has not returned after ``stall_warning`` seconds: say so, and why it may be."""
        if sql in self._stalls or self.outage_since is not None:  # an outage is said already
            return
        self._stalls[sql] = since
        stats = self._pool.get_stats()
        waiting = stats.get("requests_waiting", 0)
        cause = (
            f"no connection free: {stats.get('pool_size', 0)} open or opening, {waiting} "
            "statement(s) waiting for one (all busy, or the database refuses new connections)"
            if waiting
            else "a lock, an overloaded server, or a pooler with no server connection free"
        )
        logger.warning(
            f"A sisy runner statement has not returned after {self.stall_warning:g} s "
            f"({_statement_name(sql)}; {cause}): runs wait meanwhile",
            extra={"action": "runner_stall", "statement": _statement_name(sql), "cause": cause},
        )

    def _stall_ended(self, sql: str, now: float) -> None:
        since = self._stalls.pop(sql, None)
        if since is not None:
            logger.info(
                f"The stalled sisy runner statement ({_statement_name(sql)}) returned after "
                f"{now - since:.1f} s",
                extra={"action": "runner_stall_ended", "seconds": round(now - since, 3)},
            )

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()


def _statement_name(sql: str) -> str:
    """The SQL function a statement calls (sisy_start_run_v1...), or its first words."""
    match = re.search(r"\b(sisy_\w+_v\d+)\(", sql)
    return match.group(1) if match else " ".join(sql.split()[:4])


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


class Store:
    def __init__(self, database_alias: str = "default") -> None:
        self.database_alias = database_alias
        self.queries = sql_files.queries()

    # --- planner side (async, its own connection) ------------------------------

    def connection_params(self) -> dict[str, Any]:
        """psycopg keyword arguments for the Django database this store serves."""
        return procrastinate_seam.connection_params(self.database_alias)

    async def connect(
        self, alias: str | None = None, *, application_name: str = "sisy-planner"
    ) -> psycopg.AsyncConnection[DictRow]:
        """A planner connection, named so that pg_stat_activity shows what it is.

        To the Django database ``alias`` when given (SISY_LISTEN_DATABASE, a
        direct connection for LISTEN), else to the store's.
        """
        params = {
            **(
                self.connection_params()
                if alias is None
                else procrastinate_seam.connection_params(alias)
            ),
            "application_name": application_name,
        }
        conn = await psycopg.AsyncConnection.connect(
            **params, autocommit=True, row_factory=dict_row
        )
        # A task's options nested too deep for Python's parser must not stop
        # the planner: they are read as an UnreadableJSON.
        set_json_loads(limits.loads, conn)
        return conn

    async def claim_due(
        self,
        conn: psycopg.AsyncConnection[DictRow],
        *,
        limit: int,
        lead: dt.timedelta,
        stalled_after: dt.timedelta,
    ) -> list[policies.Due]:
        """Lock the tasks due within ``lead``; call inside a transaction that then stores decisions."""
        cursor = await conn.execute(
            self.queries["claim_due"],
            {"limit": limit, "lead": lead, "stalled_after": stalled_after},
        )
        return [due_from_row(row) for row in await cursor.fetchall()]

    async def tasks_to_plan(
        self, conn: psycopg.AsyncConnection[DictRow], *, limit: int
    ) -> list[tuple[int, schedule.PlanInput, dt.datetime]]:
        """Lock tasks without next_run, with the database's now to plan them from.

        Call inside a transaction that then calls set_plans.
        """
        cursor = await conn.execute(self.queries["tasks_to_plan"], {"limit": limit})
        return [(row["id"], _plan_input(row), row["now"]) for row in await cursor.fetchall()]

    async def store_decisions(
        self,
        conn: psycopg.AsyncConnection[DictRow],
        *,
        queue: str,
        task_name: str,
        runs_per_job: int,
        records: list[tuple[int, policies.Record]],
        plans: dict[int, schedule.Plan | schedule.ScheduleError],
    ) -> int:
        """Record runs and instants not run, and store next instants; return the runs queued.

        The runs queued for the same instant share jobs, ``runs_per_job`` at most.
        """
        if not records and not plans:
            return 0
        cursor = await conn.execute(
            self.queries["store_decisions"],
            decision_params(queue, task_name, records, plans, runs_per_job),
        )
        row = await cursor.fetchone()
        return row["queued"] if row else 0

    async def planner_state(self, conn: psycopg.AsyncConnection[DictRow]) -> PlannerState:
        cursor = await conn.execute(self.queries["planner_state"])
        row = await cursor.fetchone()
        assert row is not None
        return PlannerState(
            seconds_to_next=row["seconds_to_next"],
            seconds_to_deadline=row["seconds_to_deadline"],
            pending=row["pending"],
            seconds_to_pause_end=row["seconds_to_pause_end"],
            seconds_to_release=row["seconds_to_release"],
            backfills=row["backfills"],
        )

    async def release_jittered_runs(
        self,
        conn: psycopg.AsyncConnection[DictRow],
        *,
        lead: dt.timedelta,
        queue: str,
        task_name: str,
        runs_per_job: int,
    ) -> int:
        """Defer the jobs of the runs held for their jitter, due within ``lead``; how many."""
        cursor = await conn.execute(
            self.queries["release_jittered_runs"],
            {"lead": lead, "queue": queue, "task_name": task_name, "runs_per_job": runs_per_job},
        )
        row = await cursor.fetchone()
        return row["count"] if row else 0

    async def pending_backfills(
        self, conn: psycopg.AsyncConnection[DictRow], *, limit: int
    ) -> list[DictRow]:
        """Lock the backfills asked in SQL whose instants are still to compute."""
        cursor = await conn.execute(self.queries["pending_backfills"], {"limit": limit})
        return await cursor.fetchall()

    async def store_backfill(
        self,
        conn: psycopg.AsyncConnection[DictRow],
        *,
        backfill_id: int,
        instants: list[dt.datetime],
        error: str,
        queue: str,
        task_name: str,
    ) -> DictRow:
        """Queue the runs of a backfill's instants (sisy_store_backfill_v1): its counts."""
        cursor = await conn.execute(
            self.queries["store_backfill"],
            {
                "backfill_id": backfill_id,
                "instants": instants,
                "error": error,
                "queue": queue,
                "task_name": task_name,
            },
        )
        row = await cursor.fetchone()
        assert row is not None
        return row

    async def end_pauses(
        self, conn: psycopg.AsyncConnection[DictRow], *, limit: int
    ) -> list[DictRow]:
        """Resume the tasks whose pause ended: a row per pause ended (sisy_end_pauses_v1)."""
        cursor = await conn.execute(self.queries["end_pauses"], {"limit": limit})
        return await cursor.fetchall()

    async def housekeeping_due(
        self, conn: psycopg.AsyncConnection[DictRow], *, every: dt.timedelta
    ) -> bool:
        cursor = await conn.execute(self.queries["housekeeping_due"], {"every": every})
        row = await cursor.fetchone()
        return bool(row and row["due"])

    async def fail_orphaned_runs(
        self,
        conn: psycopg.AsyncConnection[DictRow],
        *,
        stalled_after: dt.timedelta,
        queue: str,
        task_name: str,
    ) -> int:
        cursor = await conn.execute(
            self.queries["fail_orphaned_runs"],
            {"stalled_after": stalled_after, "queue": queue, "task_name": task_name},
        )
        row = await cursor.fetchone()
        return row["count"] if row else 0

    async def time_out_runs(
        self, conn: psycopg.AsyncConnection[DictRow], *, queue: str, task_name: str
    ) -> int:
        cursor = await conn.execute(
            self.queries["time_out_runs"], {"queue": queue, "task_name": task_name}
        )
        row = await cursor.fetchone()
        return row["count"] if row else 0

    async def prune_runs(
        self, conn: psycopg.AsyncConnection[DictRow], *, retention: dt.timedelta, limit: int
    ) -> int:
        cursor = await conn.execute(
            self.queries["prune_runs"], {"retention": retention, "limit": limit}
        )
        row = await cursor.fetchone()
        return row["count"] if row else 0

    async def prune_task_changes(
        self, conn: psycopg.AsyncConnection[DictRow], *, retention: dt.timedelta, limit: int
    ) -> int:
        """Delete the recorded changes of tasks older than ``retention`` (the audit)."""
        cursor = await conn.execute(
            self.queries["prune_task_changes"], {"retention": retention, "limit": limit}
        )
        row = await cursor.fetchone()
        return row["count"] if row else 0

    async def send_probe(self, conn: psycopg.AsyncConnection[DictRow], payload: str) -> None:
        """NOTIFY the planners' channel with ``payload`` (a planner's self-addressed probe)."""
        await conn.execute(self.queries["send_probe"], {"payload": payload})

    async def load(
        self, conn: psycopg.AsyncConnection[DictRow], *, window: dt.timedelta
    ) -> liveness.Load:
        """What the cluster got through in the last ``window`` (see sisy_load_v1)."""
        from . import liveness

        cursor = await conn.execute(self.queries["load"], {"window": window})
        row = await cursor.fetchone()
        assert row is not None
        return liveness.Load(**row)

    async def stall_activity(
        self, conn: psycopg.AsyncConnection[DictRow], *, pid: int
    ) -> list[liveness.Activity]:
        """The backend ``pid`` and the sessions that block it, as pg_stat_activity shows them."""
        from . import liveness

        cursor = await conn.execute(self.queries["stall_activity"], {"pid": pid})
        return [liveness.Activity(**row) for row in await cursor.fetchall()]

    # --- runner side (async, the worker's RunnerPool) ----------------------------

    async def database_now(self, query: Query) -> float:
        """The database's clock, in epoch seconds."""
        (row,) = await query(self.queries["database_now"], {})
        return float(row["now"])

    async def start_runs(
        self,
        query: Query,
        *,
        run_ids: list[int],
        job_id: int | None,
        worker: str,
        stalled_after: dt.timedelta,
        default_grace: dt.timedelta,
    ) -> list[StartedRun]:
        """Start the runs of a job; each that runs comes with its task (a Task, not saved).

        A run that no longer exists is 'missing'.
        """
        from .models import Task

        rows = await query(
            self.queries["start_runs"],
            {
                "run_ids": run_ids,
                "job_id": job_id,
                "worker": worker,
                "stalled_after": stalled_after,
                "default_grace": default_grace,
            },
        )
        fields = Task._meta.concrete_fields
        started = {
            row["run_id"]: StartedRun(
                run_id=row["run_id"],
                status=row["run_status"],
                scheduled_for=row["run_scheduled_for"],
                attempt=row["run_attempt"],
                started_at=row["run_started_at"],
                wait=row["run_wait"],
                task=None
                if row["id"] is None
                else Task.from_db(
                    self.database_alias,
                    [field.attname for field in fields],
                    [row[str(field.column)] for field in fields],
                ),
            )
            for row in rows
        }
        return [
            started.get(run_id)
            or StartedRun(run_id, NotStarted.MISSING, None, None, None, None, None)
            for run_id in run_ids
        ]

    async def finish_run(
        self,
        query: Query,
        *,
        run_id: int,
        status: str,
        queue: str,
        task_name: str,
        error: str = "",
        traceback: str = "",
    ) -> bool:
        """Record the outcome; False if the run was no longer running (timed out, or gone)."""
        (row,) = await query(
            self.queries["finish_run"],
            {
                "run_id": run_id,
                "status": status,
                "error": error,
                "traceback": traceback,
                "queue": queue,
                "task_name": task_name,
            },
        )
        return bool(row["finished"])

    async def retry_run(
        self,
        query: Query,
        *,
        run_id: int,
        error: str,
        traceback: str,
        retry_in: dt.timedelta,
        queue: str,
        task_name: str,
    ) -> dt.datetime | None:
        """Put a failed attempt back to wait, with a job of its own; the instant to retry at.

        None when the run was not running.
        """
        (row,) = await query(
            self.queries["retry_run"],
            {
                "run_id": run_id,
                "error": error,
                "traceback": traceback,
                "retry_in": retry_in,
                "queue": queue,
                "task_name": task_name,
            },
        )
        return row["retry_at"]  # type: ignore[no-any-return]

    async def tasks_of_runs(self, query: Query, *, run_ids: list[int]) -> list[int | None]:
        """The task of each run (None: the run is gone), in the order of ``run_ids``."""
        rows = await query(self.queries["tasks_of_runs"], {"run_ids": run_ids})
        tasks = {row["id"]: row["task_id"] for row in rows}
        return [tasks.get(run_id) for run_id in run_ids]

    async def skip_runs_over_share(
        self, query: Query, *, run_ids: list[int], job_id: int | None, worker: str, error: str
    ) -> list[int]:
        """Record queued runs as skipped, reason fair_share; the ids skipped."""
        rows = await query(
            self.queries["skip_runs_over_share"],
            {"run_ids": run_ids, "job_id": job_id, "worker": worker, "error": error},
        )
        return [row["run_id"] for row in rows]

    async def interrupt_runs(self, query: Query, *, run_ids: list[int], error: str) -> list[int]:
        """Record running runs as failed, reason interrupted (their worker stopped); the ids."""
        rows = await query(self.queries["interrupt_runs"], {"run_ids": run_ids, "error": error})
        return [row["run_id"] for row in rows]

    async def time_out_runs_now(self, query: Query, *, queue: str, task_name: str) -> int:
        """Close the runs past their task's timeout (as the planners do; idempotent)."""
        (row,) = await query(
            self.queries["time_out_runs"], {"queue": queue, "task_name": task_name}
        )
        return int(row["count"])

    async def worker_seen(self, query: Query, **report: Any) -> None:
        """Report a worker's state (``sisy_worker``, read by ``manage.py sisy health``)."""
        await query(self.queries["worker_seen"], {**report, "details": Jsonb(report["details"])})

    async def send_job_probe(self, query: Query, *, channel: str, payload: str) -> None:
        """NOTIFY procrastinate's ``channel`` (a worker's self-addressed probe)."""
        await query(self.queries["send_job_probe"], {"channel": channel, "payload": payload})

    async def worker_gone(self, query: Query, *, worker_id: int) -> None:
        await query(self.queries["worker_gone"], {"worker_id": worker_id})

    async def break_task(self, query: Query, *, run_id: int, reason: str, traceback: str) -> bool:
        """Fail the run and mark its task broken; True if this call broke it."""
        (row,) = await query(
            self.queries["break_task"], {"run_id": run_id, "reason": reason, "traceback": traceback}
        )
        return bool(row["broke"])


@cache
def default_store() -> Store:
    """The process-wide Store, on procrastinate's database alias."""
    return Store(procrastinate_seam.database_alias())
