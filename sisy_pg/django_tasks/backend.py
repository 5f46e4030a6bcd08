"""``ProcrastinateBackend``: Django's task framework on procrastinate's jobs."""

from __future__ import annotations

import functools
import math
from typing import Any

from django.apps import apps
from django.core import checks
from django.db import transaction
from django.utils import timezone
from procrastinate import App
from procrastinate.contrib.django.django_connector import DjangoConnector

from .. import callables, procrastinate_seam, tasks_framework
from . import json_values, results
from .errors import JobRefused
from .job_args import TASK_NAME, JobArgs, parse, task_named

BaseTaskBackend: Any = tasks_framework.part("BaseTaskBackend")

#: What ``OPTIONS`` may hold, and its default.
OPTION_DEFAULTS: dict[str, int | float] = {"RETRIES": 0, "RETRY_DELAY": 0}

# The largest id of a procrastinate job (bigint).
_MAX_JOB_ID = 2**63 - 1


class ProcrastinateBackend(BaseTaskBackend):  # type: ignore[misc]
    """A backend of Django's task framework whose tasks are procrastinate jobs.

    They are run by the same ``manage.py procrastinate worker`` as sisy-pg's
    schedules (``sisy_pg`` and ``procrastinate.contrib.django`` installed)::

        TASKS = {
            "default": {
                "BACKEND": "sisy_pg.django_tasks.ProcrastinateBackend",
                "QUEUES": ["default", "mail"],  # [] for any queue
                "OPTIONS": {"RETRIES": 3, "RETRY_DELAY": 10},
            }
        }

    ``enqueue()`` writes the job, and its result, through Django's connection
    to procrastinate's database (``PROCRASTINATE_DATABASE_ALIAS``): an enqueue
    inside ``transaction.atomic()`` is rolled back with it, wherever it runs,
    a web request or a task in a worker. The task's ``queue_name`` is the
    job's queue, its ``priority`` the job's (higher first), ``run_after`` the
    job's ``scheduled_at``. Only a module-level Task under a prefix of
    ``SISY_ALLOWED_CALLABLES`` may be enqueued, and the worker checks it
    again before it imports anything.

    ``OPTIONS``:

    * ``"RETRIES"`` (default 0): how many more times a task that raised an
      exception is run, by procrastinate's retry. Until the last attempt its
      result is READY again, with the error kept in ``errors``, and
      ``task_finished`` is not sent. A task refused by the worker, or that
      returned a value that is not JSON, is not retried. For other retries
      per task, give it a backend alias of its own (``task.using(backend=)``).
    * ``"RETRY_DELAY"`` (seconds, default 0): the wait before each retry.

    Both are written in each job when it is enqueued.

    ``get_result()`` reads the result (status, timestamps on the database's
    clock, return value, errors, one worker id per attempt: procrastinate's
    worker id) from ``sisy_task_result``; ``TaskResult.id`` is the job's id.
    A result lives as long as its job: a worker run with
    ``--delete-jobs=successful`` or ``always`` deletes it as the job ends.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True
    # Its jobs and results are written in sisy-pg's database, in the caller's transaction,
    # and a result's id is its job's: what makes a schedule's instant enqueued exactly once
    # (sisy_pg.task_targets).
    enqueues_in_sisy_database = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.retries, self.retry_delay = _options(alias, self.options)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        _check_runnable(task)
        job_args = JobArgs(
            task_path=task.module_path,
            backend=self.alias,
            args=json_values.normalized(list(args), "the task's args"),
            kwargs=json_values.normalized(dict(kwargs), "the task's kwargs"),
            retries=self.retries,
            retry_delay=self.retry_delay,
            run_after=task.run_after,
        )
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):  # USE_TZ = False
            run_after = timezone.make_aware(run_after)
        alias = procrastinate_seam.database_alias()
        job_kwargs = job_args.as_json()
        with transaction.atomic(using=alias, savepoint=False):
            job_id = (
                _deferrer(alias)
                .configure_task(
                    TASK_NAME,
                    queue=task.queue_name,
                    priority=task.priority,
                    schedule_at=run_after,
                    task_kwargs=job_kwargs,
                )
                .defer()
            )
            enqueued_at = results.enqueued(job_id, job_kwargs, task.queue_name, task.priority)
        status = tasks_framework.part("TaskResultStatus").READY
        result = results.task_result(
            task, job_id, job_args, results.Stored(status=status, enqueued_at=enqueued_at)
        )
        tasks_framework.part("task_enqueued").send(type(self), task_result=result)
        return result

    def get_result(self, result_id: Any) -> Any:
        does_not_exist = tasks_framework.part("TaskResultDoesNotExist")
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise does_not_exist(result_id) from None
        stored = results.read(job_id) if 0 < job_id <= _MAX_JOB_ID else None
        if stored is None:
            raise does_not_exist(result_id)
        try:
            job_args = parse(stored.job_args)
            task = task_named(job_args, queue_name=stored.queue_name, priority=stored.priority)
        except JobRefused as exc:
            raise does_not_exist(f"{result_id}: its task cannot be rebuilt: {exc}") from exc
        return results.task_result(task, job_id, job_args, stored)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = list(super().check(**kwargs))
        for app in ("procrastinate.contrib.django", "sisy_pg"):
            if not apps.is_installed(app):
                messages.append(
                    checks.Error(
                        f"TASKS[{self.alias!r}] is a ProcrastinateBackend, but {app!r} is not "
                        "in INSTALLED_APPS: nothing would run its tasks",
                        id="sisy.E011",
                    )
                )
        return messages


@functools.cache
def _deferrer(alias: str) -> App:
    """A procrastinate App that defers jobs through Django's connection ``alias``.

    Not procrastinate's Django App: in a worker its connector is the worker's
    own pool, outside the caller's transaction. This one's connector is
    Django's connection of the calling thread, in whatever transaction it is.
    """
    return App(connector=DjangoConnector(alias=alias))


def _options(alias: str, options: dict[str, Any]) -> tuple[int, float]:
    invalid = tasks_framework.part("InvalidTaskBackend")
    where = f"TASKS[{alias!r}]['OPTIONS']"
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise invalid(
            f"{where}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"ProcrastinateBackend reads {', '.join(map(repr, OPTION_DEFAULTS))}"
        )
    retries = options.get("RETRIES", OPTION_DEFAULTS["RETRIES"])
    if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
        raise invalid(f"{where}['RETRIES'] must be a whole number >= 0, not {retries!r}")
    delay = options.get("RETRY_DELAY", OPTION_DEFAULTS["RETRY_DELAY"])
    if not (
        isinstance(delay, (int, float))
        and not isinstance(delay, bool)
        and math.isfinite(delay)
        and delay >= 0
    ):
        raise invalid(f"{where}['RETRY_DELAY'] must be seconds >= 0, not {delay!r}")
    return retries, float(delay)


def _check_runnable(task: Any) -> None:
    """Refuse a Task the worker would refuse: outside the allowlist, or not importable back."""
    invalid = tasks_framework.part("InvalidTask")
    path = task.module_path
    try:
        found = callables.django_task(path)
    except callables.CallableError as exc:
        raise invalid(str(exc)) from exc
    if found.func is not task.func:
        raise invalid(
            f"{path!r} does not import back to this task: a worker could not find it "
            "(define the task at module level, under the name its function has)"
        )
