"""The procrastinate task that executes one run of a sisy task.

The planner defers one job per (task, instant) with ``run_id``; this runs in
the stock procrastinate worker, in a worker thread like any sync task.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import time
import traceback as tb
from typing import Any

from procrastinate import JobContext

from . import callables, conf, procrastinate_seam
from .store import Store, default_store

logger = logging.getLogger(__name__)

RUN_TASK_NAME = "sisy.run"

_HOST = socket.gethostname()


def _worker_label(context: JobContext) -> str:
    return f"{_HOST}:{os.getpid()}:{context.worker_name or 'worker'}"


def _wait_for(at: float | None, store: Store) -> None:
    """Hold a run claimed ahead of time until its instant, on the database's clock.

    The worker's own clock may be off; asking the database how long is left
    also opens the connection the run is about to use.
    """
    if at is None:
        return
    remaining = store.seconds_until(at)
    if remaining > 0:
        time.sleep(remaining)


def run_task(context: JobContext, run_id: int, at: float | None = None) -> str:
    """Run the callable of TaskRun ``run_id`` at ``at``; record the outcome on the run.

    A callable that cannot be resolved marks its task broken (it stops
    firing until a writer mends it). An exception in the callable is recorded
    (message and traceback); the task's ``retries`` option has procrastinate
    run the job again after a backoff, otherwise the exception is re-raised
    so procrastinate marks its job failed too. The worker carries on and the
    task keeps its schedule.
    """
    from .models import Task

    store = default_store()
    worker = _worker_label(context)
    stalled_after = procrastinate_seam.job_worker_options(context).stalled_worker_timeout
    _wait_for(at, store)
    started = store.start_run(
        run_id=run_id,
        job_id=context.job.id,
        worker=worker,
        stalled_after=dt.timedelta(seconds=stalled_after),
        default_grace=dt.timedelta(seconds=float(conf.settings.GRACE)),
    )
    log_extra = {"run_id": run_id, "task_id": started.task_id}
    if started.status != "running":
        logger.info(
            f"Run {run_id} not started: {started.status}",
            extra={"action": "run_not_started", "status": started.status, **log_extra},
        )
        return started.status
    # A "running" run exists: only a missing one comes back without them.
    assert started.task_id is not None and started.scheduled_for is not None
    finish = functools.partial(
        store.finish_run, run_id=run_id, queue=context.job.queue, task_name=context.job.task_name
    )

    task = Task.objects.using(store.database_alias).get(pk=started.task_id)
    try:
        func = callables.resolve(task.callable_info, using=store.database_alias)
    except callables.CallableError as exc:
        if store.break_task(run_id=run_id, reason=str(exc), traceback=tb.format_exc()):
            logger.error(
                f"Task {task.pk} is broken and stops firing until its row is fixed: {exc}",
                extra={"action": "task_broken", "reason": str(exc), **log_extra},
            )
        return "broken"

    message: dict[str, Any] = {
        "task": task,
        # What Sisy's callables received: the Channels message that
        # started the run (the task's id and the instant, epoch seconds).
        "channel_message": {"id": task.pk, "ts": started.scheduled_for.timestamp()},
        "message": {
            "run_id": run_id,
            "scheduled_for": started.scheduled_for,
            "job_id": context.job.id,
            "worker": worker,
            "attempt": started.attempt,
        },
    }
    try:
        func(message)
    except BaseException as exc:
        error, trace = f"{type(exc).__name__}: {exc}", tb.format_exc()
        attempt = started.attempt or 1
        retry_in = task.policy.retry_in(attempt) if isinstance(exc, Exception) else None
        if retry_in is not None:
            retry_at = store.retry_run(
                run_id=run_id, error=error, traceback=trace, retry_in=dt.timedelta(seconds=retry_in)
            )
            if retry_at is not None:
                logger.warning(
                    f"Run {run_id} attempt {attempt} failed: {exc!r}; "
                    f"retrying at {retry_at.isoformat()}",
                    extra={"action": "run_retry", "attempt": attempt, **log_extra},
                )
                raise procrastinate_seam.RetryRun(retry_at, attempt) from exc
        if not finish(status="failed", error=error, traceback=trace):
            _log_returned_late(run_id, "failed", log_extra)
        logger.warning(
            f"Run {run_id} failed: {exc!r}",
            extra={"action": "run_failed", "exception": repr(exc), **log_extra},
        )
        raise
    if not finish(status="succeeded"):
        _log_returned_late(run_id, "succeeded", log_extra)
        return "timed_out"
    logger.info(
        f"Run {run_id} of task {task.pk} succeeded",
        extra={"action": "run_succeeded", **log_extra},
    )
    return "succeeded"


def _log_returned_late(run_id: int, outcome: str, log_extra: dict[str, Any]) -> None:
    logger.warning(
        f"Run {run_id} {outcome} after it had timed out (noted in its details)",
        extra={"action": "run_returned_late", "outcome": outcome, **log_extra},
    )
