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

from . import procrastinate_seam, schedule, sql_files


@dataclasses.dataclass(frozen=True)
class PlannerState:
    seconds_to_next: float | None
    pending: bool


@dataclasses.dataclass(frozen=True)
class ClaimedTask:
    task_id: int
    plan_input: schedule.PlanInput
    fired_for: dt.datetime
    run_id: int | None
    stale: bool
    claimed_at: dt.datetime  # the database's clock when it was claimed


@dataclasses.dataclass(frozen=True)
class StartedRun:
    status: str
    task_id: int | None
    scheduled_for: dt.datetime | None


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
        catchup: dt.timedelta,
        queue: str,
        task_name: str,
    ) -> list[ClaimedTask]:
        """Fire tasks due within ``lead``; call inside a transaction that then calls set_plans."""
        cursor = await conn.execute(
            self.queries["claim_due"],
            {
                "limit": limit,
                "lead": lead,
                "catchup": catchup,
                "queue": queue,
                "task_name": task_name,
            },
        )
        return [
            ClaimedTask(
                task_id=row["id"],
                plan_input=_plan_input(row),
                fired_for=row["fired_for"],
                run_id=row["run_id"],
                stale=row["stale"],
                claimed_at=row["claimed_at"],
            )
            for row in await cursor.fetchall()
        ]

    async def tasks_to_plan(
        self, conn: psycopg.AsyncConnection[DictRow], *, limit: int
    ) -> list[tuple[int, schedule.PlanInput, dt.datetime]]:
        """Lock tasks without next_run, with the database's now to plan them from.

        Call inside a transaction that then calls set_plans.
        """
        cursor = await conn.execute(self.queries["tasks_to_plan"], {"limit": limit})
        return [(row["id"], _plan_input(row), row["now"]) for row in await cursor.fetchall()]

    async def set_plans(
        self,
        conn: psycopg.AsyncConnection[DictRow],
        plans: dict[int, schedule.Plan | schedule.ScheduleError],
    ) -> None:
        if not plans:
            return
        ids: list[int] = []
        next_runs: list[dt.datetime | None] = []
        finished: list[bool] = []
        errors: list[str] = []
        for task_id, plan in plans.items():
            ids.append(task_id)
            if isinstance(plan, schedule.ScheduleError):
                next_runs.append(None)
                finished.append(False)
                errors.append(str(plan))
            else:
                next_runs.append(plan.next_run)
                finished.append(plan.finished)
                errors.append("")
        await conn.execute(
            self.queries["set_plans"],
            {"ids": ids, "next_runs": next_runs, "finished": finished, "errors": errors},
        )

    async def planner_state(self, conn: psycopg.AsyncConnection[DictRow]) -> PlannerState:
        cursor = await conn.execute(self.queries["planner_state"])
        row = await cursor.fetchone()
        assert row is not None
        return PlannerState(seconds_to_next=row["seconds_to_next"], pending=row["pending"])

    async def housekeeping_due(
        self, conn: psycopg.AsyncConnection[DictRow], *, every: dt.timedelta
    ) -> bool:
        cursor = await conn.execute(self.queries["housekeeping_due"], {"every": every})
        row = await cursor.fetchone()
        return bool(row and row["due"])

    async def fail_orphaned_runs(
        self, conn: psycopg.AsyncConnection[DictRow], *, stalled_after: dt.timedelta
    ) -> int:
        cursor = await conn.execute(
            self.queries["fail_orphaned_runs"], {"stalled_after": stalled_after}
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
        with connections[self.database_alias].cursor() as cursor:
            cursor.execute(self.queries["seconds_until"], {"instant": instant})
            row = cursor.fetchone()
        seconds: float = row[0]
        return seconds

    def start_run(
        self, *, run_id: int, job_id: int | None, worker: str, stalled_after: dt.timedelta
    ) -> StartedRun:
        # Any: the stubs' parameter types omit timedelta, which psycopg adapts to interval.
        params: dict[str, Any] = {
            "run_id": run_id,
            "job_id": job_id,
            "worker": worker,
            "stalled_after": stalled_after,
        }
        with connections[self.database_alias].cursor() as cursor:
            cursor.execute(self.queries["start_run"], params)
            status, task_id, scheduled_for = cursor.fetchone()
        return StartedRun(status=status, task_id=task_id, scheduled_for=scheduled_for)

    def finish_run(self, *, run_id: int, status: str, error: str = "", traceback: str = "") -> bool:
        """Record the outcome; False if the run was gone (its task was deleted)."""
        with connections[self.database_alias].cursor() as cursor:
            cursor.execute(
                self.queries["finish_run"],
                {"run_id": run_id, "status": status, "error": error, "traceback": traceback},
            )
            rowcount: int = cursor.rowcount
            return rowcount == 1


@cache
def default_store() -> Store:
    """The process-wide Store, on procrastinate's database alias."""
    return Store(procrastinate_seam.database_alias())
