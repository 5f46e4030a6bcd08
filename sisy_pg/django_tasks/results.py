"""The results of Django tasks, in ``sisy_task_result`` (sql/schema.sql), and TaskResults of them.

Written and read through Django's connection to procrastinate's database
(``PROCRASTINATE_DATABASE_ALIAS``), the one the jobs are deferred on, so
that an enqueue's job and result share its transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import traceback
from typing import Any

from django.db import connections
from django.db.backends.utils import CursorWrapper

from .. import procrastinate_seam, tasks_framework
from .job_args import JobArgs


@dataclasses.dataclass
class Stored:
    """A row of sisy_task_result (and, when read, what its job says)."""

    status: str
    enqueued_at: dt.datetime | None
    started_at: dt.datetime | None = None
    last_attempted_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    worker_ids: list[str] = dataclasses.field(default_factory=list)
    return_value: Any = None
    errors: list[dict[str, str]] = dataclasses.field(default_factory=list)
    job_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    queue_name: str = ""
    priority: int = 0


def _cursor() -> CursorWrapper:
    return connections[procrastinate_seam.database_alias()].cursor()


def _json(value: Any) -> Any:
    # psycopg decodes jsonb; another driver may hand over its text.
    return json.loads(value) if isinstance(value, str) else value


def enqueued(job_id: int, job_args: dict[str, Any], queue_name: str, priority: int) -> dt.datetime:
    """Record the result of job ``job_id``, just deferred in this transaction: READY."""
    with _cursor() as cursor:
        cursor.execute(
            "SELECT sisy_task_result_enqueued_v1(%s, %s::jsonb, %s, %s)",
            [job_id, json.dumps(job_args), queue_name, priority],
        )
        (enqueued_at,) = cursor.fetchone()
    return enqueued_at  # type: ignore[no-any-return]


def start(
    job_id: int, worker_id: str, job_args: dict[str, Any], queue_name: str, priority: int
) -> Stored | None:
    """An attempt starts: RUNNING. None when the task already succeeded (not to run twice).

    ``job_args``, ``queue_name`` and ``priority`` are the job's: its result's
    when it has none yet (a job deferred by other means than the backend).
    """
    with _cursor() as cursor:
        cursor.execute(
            "SELECT * FROM sisy_task_result_start_v1(%s, %s, %s::jsonb, %s, %s)",
            [job_id, worker_id, json.dumps(job_args), queue_name, priority],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    enqueued_at, started_at, last_attempted_at, worker_ids, errors = row
    return Stored(
        status=tasks_framework.part("TaskResultStatus").RUNNING,
        enqueued_at=enqueued_at,
        started_at=started_at,
        last_attempted_at=last_attempted_at,
        worker_ids=list(worker_ids),
        errors=list(_json(errors)),
    )


def finish(
    job_id: int, status: str, *, return_value: Any = None, error: dict[str, str] | None = None
) -> dt.datetime | None:
    """An attempt ended: SUCCESSFUL, FAILED, or READY (retried). When it finished (None: READY)."""
    with _cursor() as cursor:
        cursor.execute(
            "SELECT sisy_task_result_finish_v1(%s, %s, %s::jsonb, %s::jsonb)",
            [
                job_id,
                str(status),
                None if return_value is None else json.dumps(return_value, allow_nan=False),
                None if error is None else json.dumps(error),
            ],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def read(job_id: int) -> Stored | None:
    """The result of job ``job_id`` with its job's arguments, queue and priority; None if none.

    READY or RUNNING, but its job can no longer run (it ended without
    reporting, or its worker died): FAILED.
    """
    stalled_after = procrastinate_seam.stalled_worker_timeout()
    with _cursor() as cursor:
        cursor.execute(
            "SELECT * FROM sisy_task_result_v1(%s, make_interval(secs => %s))",
            [job_id, stalled_after],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    job_args, queue_name, priority, status, enqueued_at, started_at = row[:6]
    last_attempted_at, finished_at, worker_ids, return_value, errors = row[6:]
    return Stored(
        status=status,
        enqueued_at=enqueued_at,
        started_at=started_at,
        last_attempted_at=last_attempted_at,
        finished_at=finished_at,
        worker_ids=list(worker_ids),
        return_value=_json(return_value),
        errors=list(_json(errors)),
        job_args=_json(job_args),
        queue_name=queue_name,
        priority=priority,
    )


def error_of(exc: BaseException) -> dict[str, str]:
    """A failed attempt's error as Django's TaskError holds it."""
    kind = type(exc)
    return {
        "exception_class_path": f"{kind.__module__}.{kind.__qualname__}",
        "traceback": "".join(traceback.format_exception(kind, exc, exc.__traceback__)),
    }


def task_result(task: Any, job_id: int, job: JobArgs, stored: Stored) -> Any:
    """The framework's TaskResult of a job (its id: the job's id, as a string)."""
    status_type = tasks_framework.part("TaskResultStatus")
    task_error = tasks_framework.part("TaskError")
    result = tasks_framework.part("TaskResult")(
        task=task,
        id=str(job_id),
        status=status_type(stored.status),
        enqueued_at=stored.enqueued_at,
        started_at=stored.started_at,
        finished_at=stored.finished_at,
        last_attempted_at=stored.last_attempted_at,
        args=job.args,
        kwargs=job.kwargs,
        backend=job.backend,
        errors=[
            task_error(
                exception_class_path=error["exception_class_path"], traceback=error["traceback"]
            )
            for error in stored.errors
        ],
        worker_ids=list(stored.worker_ids),
    )
    object.__setattr__(result, "_return_value", stored.return_value)
    return result
