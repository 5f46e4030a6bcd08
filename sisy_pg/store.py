"""The one object that issues sisy-pg's SQL (the named queries of ``sql/queries.sql``).

The planner talks to it over its own asynchronous psycopg connection; the
runner, which executes inside procrastinate's worker threads, over Django's
connection. Both see the same queries, which call the versioned SQL
functions (``sisy_*_v1``) of the schema.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from functools import cache
from typing import Any

import psycopg
from django.db import connections
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from . import policies, procrastinate_seam, schedule, sql_files


@dataclasses.dataclass(frozen=True)
class PlannerState:
    seconds_to_next: float | None
    seconds_to_deadline: float | None
    pending: bool


@dataclasses.dataclass(frozen=True)
class StartedRun:
    status: str
    task_id: int | None
    scheduled_for: dt.datetime | None
    attempt: int | None


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
        policy=policies.Policy.of(row["options"], row["allow_overlap"]),
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
) -> dict[str, Any]:
    """The parameters of the query store_decisions."""
    return {
        "queue": queue,
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


class Store:
    def __init__(self, database_alias: str = "default") -> None:
        self.database_alias = database_alias
        self.queries = sql_files.queries()

    # --- planner side (async, its own connection) ------------------------------

    def connection_params(self) -> dict[str, Any]:
        """psycopg keyword arguments for the Django database this store serves."""
        return procrastinate_seam.connection_params(self.database_alias)

    async def connect(self) -> psycopg.AsyncConnection[DictRow]:
        """A planner connection, named so that pg_stat_activity shows what it is."""
        params = {**self.connection_params(), "application_name": "sisy-planner"}
        return await psycopg.AsyncConnection.connect(
            **params, autocommit=True, row_factory=dict_row
        )

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
        records: list[tuple[int, policies.Record]],
        plans: dict[int, schedule.Plan | schedule.ScheduleError],
    ) -> int:
        """Record runs and instants not run, and store next instants; return the runs queued."""
        if not records and not plans:
            return 0
        cursor = await conn.execute(
            self.queries["store_decisions"], decision_params(queue, task_name, records, plans)
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
        )

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

    # --- runner side (sync, Django's connection in the worker thread) ----------

    def seconds_until(self, instant: float) -> float:
        """Seconds from the database's now to ``instant`` (epoch seconds); negative if past."""
        (seconds,) = self._call("seconds_until", {"instant": instant})
        return float(seconds)

    def _call(self, query: str, params: dict[str, Any]) -> Any:
        with connections[self.database_alias].cursor() as cursor:
            cursor.execute(self.queries[query], params)
            return cursor.fetchone()

    def start_run(
        self,
        *,
        run_id: int,
        job_id: int | None,
        worker: str,
        stalled_after: dt.timedelta,
        default_grace: dt.timedelta,
    ) -> StartedRun:
        status, task_id, scheduled_for, attempt = self._call(
            "start_run",
            {
                "run_id": run_id,
                "job_id": job_id,
                "worker": worker,
                "stalled_after": stalled_after,
                "default_grace": default_grace,
            },
        )
        return StartedRun(
            status=status, task_id=task_id, scheduled_for=scheduled_for, attempt=attempt
        )

    def finish_run(
        self,
        *,
        run_id: int,
        status: str,
        queue: str,
        task_name: str,
        error: str = "",
        traceback: str = "",
    ) -> bool:
        """Record the outcome; False if the run was no longer running (timed out, or gone)."""
        (finished,) = self._call(
            "finish_run",
            {
                "run_id": run_id,
                "status": status,
                "error": error,
                "traceback": traceback,
                "queue": queue,
                "task_name": task_name,
            },
        )
        return bool(finished)

    def retry_run(
        self, *, run_id: int, error: str, traceback: str, retry_in: dt.timedelta
    ) -> dt.datetime | None:
        """Put a failed attempt back to wait; the instant to retry at (None: not running)."""
        (retry_at,) = self._call(
            "retry_run",
            {"run_id": run_id, "error": error, "traceback": traceback, "retry_in": retry_in},
        )
        return retry_at  # type: ignore[no-any-return]

    def break_task(self, *, run_id: int, reason: str, traceback: str) -> bool:
        """Fail the run and mark its task broken; True if this call broke it."""
        (broke,) = self._call(
            "break_task", {"run_id": run_id, "reason": reason, "traceback": traceback}
        )
        return bool(broke)


@cache
def default_store() -> Store:
    """The process-wide Store, on procrastinate's database alias."""
    return Store(procrastinate_seam.database_alias())
