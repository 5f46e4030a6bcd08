"""The soak's callable (bench/soak): one row per execution, so that a duplicate shows.

soak_execution has no unique constraint on purpose: a second execution of
the same (task, instant) is kept and counted, not refused.
"""

from __future__ import annotations

import os
from typing import Any

from django.db import connection

EXECUTION_TABLE = """
CREATE TABLE IF NOT EXISTS soak_execution (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id bigint NOT NULL,
    scheduled_for timestamptz NOT NULL,
    run_id bigint NOT NULL,
    pid integer NOT NULL,
    executed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS soak_execution_instant_idx ON soak_execution (task_id, scheduled_for);
"""


def record(message: dict[str, Any]) -> None:
    """One raw INSERT (autocommit): cheap, so that the soak measures the engine, not the task."""
    run = message["message"]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO soak_execution (task_id, scheduled_for, run_id, pid) "
            "VALUES (%s, %s, %s, %s)",
            [message["task"].pk, run["scheduled_for"], run["run_id"], os.getpid()],
        )
