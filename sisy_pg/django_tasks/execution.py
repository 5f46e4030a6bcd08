"""The procrastinate task that runs the Django tasks of a ProcrastinateBackend, and its retries.

It runs in a thread of the worker (a sync procrastinate task), with Django's
connections handled as around a request: closed before and after the task
if past ``CONN_MAX_AGE`` or unusable. Before it imports anything, it checks
the job's path against SISY_ALLOWED_CALLABLES; then that the path names a
Task whose backend is a ProcrastinateBackend. The result follows each
attempt (``sisy_task_result``), and the framework's ``task_started`` and
``task_finished`` are sent as Django's own backends send them; the second
once, with the final outcome.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import async_to_sync
from django.db import close_old_connections, reset_queries
from procrastinate import App, BaseRetryStrategy, JobContext, RetryDecision

from .. import tasks_framework
from . import json_values, results
from .errors import JobRefused, ReturnValueNotJSON, SuccessNotRecorded
from .job_args import TASK_NAME, JobArgs, parse, task_named

logger = logging.getLogger(__name__)


def install(app: App) -> None:
    """Register the task that runs Django tasks' jobs on procrastinate's App (idempotent)."""
    if TASK_NAME in app.tasks:
        return
    app.task(name=TASK_NAME, pass_context=True, retry=RetryAsTheJobSays())(run_django_task)


def retry_delay(exception: BaseException, job: Any) -> float | None:
    """Seconds before a failed attempt of ``job`` is run again; None: it is not.

    The job's own ``retries`` (the backend's RETRIES when it was enqueued)
    bound the attempts. Neither a refused job nor a return value that is not
    JSON is retried, nor what is not an Exception (KeyboardInterrupt...).
    """
    if not isinstance(exception, Exception) or isinstance(
        exception, (JobRefused, ReturnValueNotJSON, SuccessNotRecorded)
    ):
        return None
    try:
        args = parse(job.task_kwargs)
    except JobRefused:
        return None
    return args.retry_delay if job.attempts < args.retries else None


class RetryAsTheJobSays(BaseRetryStrategy):
    """procrastinate's retry of a Django task's job, as :func:`retry_delay` decides."""

    def get_retry_decision(self, *, exception: BaseException, job: Any) -> RetryDecision | None:
        delay = retry_delay(exception, job)
        if delay is None:
            return None
        return RetryDecision(
            retry_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delay)
        )


def run_django_task(context: JobContext, /, **job_kwargs: Any) -> None:
    """Run one attempt of the Django task a job names, and record how it went.

    The job fails when the task fails (procrastinate retries it when the
    backend's RETRIES allow) or is refused; it succeeds when the task
    returns, or when its result says it already succeeded (a job run again
    after its worker died).
    """
    close_old_connections()
    try:
        _attempt(context, job_kwargs)
    finally:
        close_old_connections()
        reset_queries()


def _attempt(context: JobContext, job_kwargs: dict[str, Any]) -> None:
    job = context.job
    assert job.id is not None
    job_id = job.id
    worker_id = str(job.worker_id) if job.worker_id is not None else str(context.worker_name)
    stored = results.start(job_id, worker_id, job_kwargs, job.queue, job.priority)
    log = {"job_id": job_id, "task_path": job_kwargs.get("task_path"), "attempt": job.attempts + 1}
    if stored is None:
        logger.warning(
            f"Job {job_id}: its Django task {log['task_path']!r} already succeeded; not run again",
            extra={"action": "django_task_already_succeeded", **log},
        )
        return
    try:
        args = parse(job_kwargs)
        task = task_named(args, queue_name=job.queue, priority=job.priority)
    except JobRefused as exc:
        results.finish(job_id, _status("FAILED"), error=results.error_of(exc))
        logger.error(
            f"Job {job_id} refused, its Django task not run: {exc}",
            extra={"action": "django_task_refused", "reason": str(exc), **log},
        )
        raise
    backend_type = type(task.get_backend())
    result = results.task_result(task, job_id, args, stored)
    try:
        tasks_framework.part("task_started").send(sender=backend_type, task_result=result)
        returned = _call(task, result, args)
        close_old_connections()  # what the task did with the connections, cleared
        try:
            return_value = json_values.normalized(returned, "the return value")
        except (TypeError, ValueError) as exc:
            raise ReturnValueNotJSON(f"{args.task_path!r} returned a value: {exc}") from exc
    except BaseException as exc:
        close_old_connections()
        error = results.error_of(exc)
        delay = retry_delay(exc, job)
        if delay is not None:
            results.finish(job_id, _status("READY"), error=error)
            logger.warning(
                f"Job {job_id}: attempt {job.attempts + 1} of Django task {args.task_path!r} "
                f"failed: {exc!r}; retried in {delay:g} s",
                extra={"action": "django_task_retry", "retry_in": delay, **log},
            )
            raise
        _finished(result, _status("FAILED"), results.finish(job_id, _status("FAILED"), error=error))
        result.errors.append(
            tasks_framework.part("TaskError")(
                exception_class_path=error["exception_class_path"], traceback=error["traceback"]
            )
        )
        logger.error(
            f"Job {job_id}: Django task {args.task_path!r} failed: {exc!r}",
            extra={"action": "django_task_failed", **log},
        )
        _send_finished(backend_type, result)  # in the except block: Django logs the exception
        raise
    try:
        finished_at = results.finish(job_id, _status("SUCCESSFUL"), return_value=return_value)
    except Exception as exc:
        raise SuccessNotRecorded(
            f"Job {job_id}: Django task {args.task_path!r} returned, but its result could not be "
            f"recorded ({exc!r}); not run again"
        ) from exc
    object.__setattr__(result, "_return_value", return_value)
    _finished(result, _status("SUCCESSFUL"), finished_at)
    _send_finished(backend_type, result)


def _status(name: str) -> Any:
    return getattr(tasks_framework.part("TaskResultStatus"), name)


def _finished(result: Any, status: Any, finished_at: Any) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", finished_at)


def _call(task: Any, result: Any, args: JobArgs) -> Any:
    """Call the task's function; an async one on an event loop of its own, in this thread's stead.

    Not through ``Task.call``: its ``async_to_sync`` would run the coroutine
    on the worker's event loop (this thread was started from it), where a
    blocking coroutine would stall the worker. Here, as sisy's runner does,
    the coroutine gets a loop of its own while this thread waits and serves
    its ``sync_to_async`` calls (the async ORM's queries among them).
    """
    call_args = list(args.args)
    if task.takes_context:
        call_args.insert(0, tasks_framework.part("TaskContext")(task_result=result))
    if inspect.iscoroutinefunction(task.func):
        return async_to_sync(task.func, force_new_loop=True)(*call_args, **args.kwargs)
    returned = task.func(*call_args, **args.kwargs)
    if inspect.isawaitable(returned):  # a sync function returning a coroutine
        return async_to_sync(_awaited, force_new_loop=True)(returned)
    return returned


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _send_finished(sender: type, result: Any) -> None:
    """task_finished, to every receiver; one that fails is logged, the outcome stays recorded."""
    responses = tasks_framework.part("task_finished").send_robust(sender=sender, task_result=result)
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error(
                f"A receiver of task_finished failed for result {result.id}: {response!r}",
                exc_info=response,
                extra={
                    "action": "django_task_receiver_failed",
                    "job_id": int(result.id),
                    "receiver": getattr(receiver, "__qualname__", repr(receiver)),
                },
            )
