"""A run that enqueued a Django task follows the task's result, through the framework's signals.

``task_started`` and ``task_finished`` are sent by whichever process runs
the task (a procrastinate worker for sisy-pg's backend, django-tasks-db's
``db_worker``, the enqueuing thread for the ImmediateBackend): the same
Django project, so these receivers run there. The started instant is noted
in the run's details; the end closes the run as succeeded or failed (as
``sisy_finish_run_v1`` closes a run whose callable returned). A result no
schedule enqueued costs one index lookup. A receiver never fails the task:
what goes wrong is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, transaction

from . import conf, procrastinate_seam, task_targets, tasks_framework
from .runner import RUN_TASK_NAME

logger = logging.getLogger(__name__)


def connect() -> None:
    """Connect the receivers to the framework's signals, where the framework is installed."""
    if not tasks_framework.available():
        return
    tasks_framework.part("task_started").connect(
        task_started, dispatch_uid="sisy_pg.task_results.task_started"
    )
    tasks_framework.part("task_finished").connect(
        task_finished, dispatch_uid="sisy_pg.task_results.task_finished"
    )


def task_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _follow(
        "SELECT sisy_task_result_started_v1(%s, %s, %s)",
        [str(task_result.id), task_result.backend, task_result.started_at],
        task_result,
        "started",
    )


def task_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    status, error, traceback = task_targets.outcome_of(task_result)
    run_id = _follow(
        "SELECT sisy_task_result_finished_v1(%s, %s, %s, %s, %s, %s, %s)",
        [
            str(task_result.id),
            task_result.backend,
            status,
            error,
            traceback,
            conf.settings.QUEUE,
            RUN_TASK_NAME,
        ],
        task_result,
        "finished",
    )
    if run_id is not None:
        logger.info(
            f"Run {run_id}: its Django task {task_result.task.module_path} ended {status} "
            f"(result {task_result.id} on {task_result.backend!r})",
            extra={
                "action": f"run_{status}",
                "run_id": run_id,
                "status": status,
                "task_result_id": str(task_result.id),
                "task_backend": task_result.backend,
            },
        )


def _follow(sql: str, params: list[Any], task_result: Any, what: str) -> int | None:
    alias = procrastinate_seam.database_alias()
    try:
        # A savepoint: a failure leaves a transaction the task runs in usable.
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    except Exception:
        logger.exception(
            f"The run that enqueued Django task result {task_result.id} could not be told the "
            f"task {what}: the run stays running until its timeout or the housekeeping closes it",
            extra={"action": "task_result_not_followed", "task_result_id": str(task_result.id)},
        )
        return None
    return row[0] if row else None
