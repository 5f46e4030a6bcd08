"""The soak's reads of the database: what each expected instant became, and the killed worker's runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from devtools import databases

LABEL = "soak-"  # the soak's tasks' labels start with it


def rows(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """The rows of a query, in a session of its own."""
    return databases.query(url, sql, params) or []


def db_now(url: str) -> dt.datetime:
    """The database's clock: every instant and every run timestamp is on it."""
    now: dt.datetime = rows(url, "SELECT clock_timestamp()")[0][0]
    return now


def held_runs(url: str, pid: int) -> list[int]:
    """The open runs a worker holds: started by it, or whose job it has fetched.

    Its procrastinate worker id is read from a job of a run it started (the
    label is host:pid:name); the jobs it has fetched are those 'doing' under
    that id (after a SIGKILL its row stays until procrastinate prunes it as
    stalled).
    """
    last_job = rows(
        url,
        """SELECT j.worker_id FROM sisy_taskrun AS r JOIN procrastinate_jobs AS j ON j.id = r.job_id
            WHERE r.worker LIKE %s AND j.worker_id IS NOT NULL ORDER BY r.id DESC LIMIT 1""",
        [f"%:{pid}:%"],
    )
    worker_id = last_job[0][0] if last_job else None
    held = rows(
        url,
        """SELECT r.id FROM sisy_taskrun AS r
             LEFT JOIN procrastinate_jobs AS j ON j.id = r.job_id
            WHERE r.status IN ('queued', 'running')
              AND (r.worker LIKE %s OR (j.worker_id = %s AND j.status = 'doing'))""",
        [f"%:{pid}:%", worker_id],
    )
    return [run_id for (run_id,) in held]


def open_runs(url: str, run_ids: list[int]) -> int:
    return int(
        rows(
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
    outcomes = dict(rows(url, OUTCOMES_SQL, params))
    executions, duplicated = rows(
        url,
        """SELECT coalesce(sum(n), 0)::bigint, count(*) FILTER (WHERE n > 1)
             FROM (SELECT count(*) AS n FROM soak_execution GROUP BY task_id, scheduled_for) AS c""",
    )[0]
    executed_not_succeeded = dict(
        rows(
            url,
            """SELECT coalesce(r.status || '/' || coalesce(r.details ->> 'reason', '-'), 'no run row'),
                      count(*)
                 FROM soak_execution AS x LEFT JOIN sisy_taskrun AS r ON r.id = x.run_id
                WHERE r.status IS DISTINCT FROM 'succeeded'
                GROUP BY 1""",
        )
    )
    n, p50, p95, worst = rows(url, LAG_SQL, params)[0]
    killed = dict(
        rows(
            url,
            """SELECT status || '/' || coalesce(details ->> 'reason', '-'), count(*)
                 FROM sisy_taskrun WHERE id = ANY(%s::bigint[]) GROUP BY 1""",
            [killed_runs],
        )
    )
    (closed_after,) = rows(
        url,
        """SELECT extract(epoch FROM max(finished_at) - %s)::float8 FROM sisy_taskrun
            WHERE id = ANY(%s::bigint[]) AND details ->> 'reason' IN ('worker_lost', 'not_started')""",
        [killed_at, killed_runs],
    )[0]
    (pending_oldest,) = rows(
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
        "double_records": rows(url, DOUBLE_RECORDS_SQL)[0][0],
        "lag": {"n": n, "p50": p50, "p95": p95, "max": worst} if n else {"n": 0},
        "killed_runs": killed,
        "killed_open": open_runs(url, killed_runs),
        "killed_closed_after": closed_after,
        "pending_oldest": pending_oldest,
    }
