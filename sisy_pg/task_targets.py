"""A Django task (``django.tasks``, ``@task``) as what a sisy schedule runs.

A schedule whose callable is a Django task does not call it: at each instant
the worker enqueues it on its backend, with the task's ``userdata`` as
keyword arguments, and the run follows the task's result (the framework's
``task_started`` / ``task_finished`` signals, :mod:`sisy_pg.task_results`).

Exactly once: one worker starts each run (``sisy_start_run_v1``); where the
backend writes to sisy-pg's database (:func:`commits_with_sisy`), the enqueue
and the run's record (``sisy_task_enqueued_v1``) commit in one transaction,
so an instant is enqueued once or not at all, and the history says which.
Other backends enqueue, then record: at most once (a crash in between loses
the record, not a second enqueue), accepted only for the aliases listed in
``SISY_AT_MOST_ONCE_BACKENDS``; ``run_id`` lets the task de-duplicate.

Everything is checked when the schedule is saved and again by the worker
before each enqueue (raw SQL can write anything): see :func:`locate` and
:func:`check_arguments`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import inspect
import json
import sys
from typing import Any

from django.db import connections, transaction

from . import conf, procrastinate_seam, tasks_framework
from .vocabulary import RunStatus

# The keyword parameters a task may declare to receive the run's instant and id.
SCHEDULED_FOR = "scheduled_for"
RUN_ID = "run_id"
PASSED_BY_SISY = (SCHEDULED_FOR, RUN_ID)
# What Task.using() may vary per schedule (run_after is refused: the schedule says when).
USING_FIELDS = ("backend", "queue_name", "priority")


class TaskTargetError(ValueError):
    """A Django task that a schedule cannot enqueue; the message names the problem."""


class EnqueueUncertain(RuntimeError):
    """An enqueue on a backend outside sisy-pg's database failed: it may have taken the task.

    Never retried by the schedule's ``retries``: a second enqueue could run the instant twice.
    """


def using_of(task: Any, module_level: Any) -> dict[str, Any]:
    """What ``task`` (a ``.using()`` of ``module_level``) changes, to be stored with the path."""
    if task.run_after is not None:
        raise TaskTargetError(
            f"{task.module_path!r} has run_after set: a schedule decides when its task runs, "
            "give it a Task without run_after"
        )
    return {
        name: getattr(task, name)
        for name in USING_FIELDS
        if getattr(task, name) != getattr(module_level, name)
    }


def check_module_level(task: Any, path: str, found: Any) -> None:
    """``found``, the object at ``path``, is the Django task ``task`` names itself as."""
    if not tasks_framework.is_task(found):
        raise TaskTargetError(
            f"{path!r} is {type(found).__name__}, not the Django task {task.module_path!r}: a "
            "task's dotted path must import back to it (was it renamed, or wrapped?)"
        )
    if found.func is not task.func:
        raise TaskTargetError(
            f"{path!r} is another Django task than the one given: a task's dotted path must "
            "import back to it"
        )


def with_using(task: Any, path: str, using: Any) -> Any:
    """The module-level ``task`` with a stored ``using`` applied, its backend validating it."""
    if using is None:
        using = {}
    if not isinstance(using, dict) or set(using) - set(USING_FIELDS):
        raise TaskTargetError(
            f"'using' of {path!r} must be an object with only the keys "
            f"{', '.join(USING_FIELDS)} (it is {json.dumps(using)[:200]})"
        )
    task = _validated(path, lambda: task.using(**using) if using else task)
    backend_alias = task.backend
    backend = _validated(path, task.get_backend)
    # Task() validated it on creation; a task reconstructed from a row is checked here too.
    _validated(path, lambda: backend.validate_task(task))
    if task.run_after is not None:
        raise TaskTargetError(f"{path!r} has run_after set: a schedule decides when its task runs")
    if not commits_with_sisy(backend) and backend_alias not in conf.settings.AT_MOST_ONCE_BACKENDS:
        raise TaskTargetError(
            f"{path!r} is enqueued on backend {backend_alias!r} ({type(backend).__name__}), "
            "which does not write to sisy-pg's database: an instant could be enqueued at most "
            "once, not exactly once. List the alias in SISY_AT_MOST_ONCE_BACKENDS to accept "
            "that (the task can take a 'run_id' parameter to de-duplicate), or use "
            "sisy_pg.django_tasks.ProcrastinateBackend"
        )
    return task


def _validated(path: str, make: Any) -> Any:
    """``make()``; the framework's refusals (unknown alias, queue, priority...) as TaskTargetError."""
    from django.core.exceptions import ImproperlyConfigured

    refusals = (
        tasks_framework.part("InvalidTask"),
        tasks_framework.part("InvalidTaskBackend"),
        ImproperlyConfigured,
        TypeError,
        ValueError,
    )
    try:
        return make()
    except refusals as exc:
        raise TaskTargetError(f"{path!r} cannot be enqueued: {exc}") from None


def commits_with_sisy(backend: Any) -> bool:
    """Whether ``backend`` writes its tasks in sisy-pg's database, inside the caller's transaction.

    sisy-pg's ProcrastinateBackend does (it uses procrastinate's alias, which
    is sisy's); django-tasks-db's DatabaseBackend does where the router
    sends its results to that alias.
    """
    if getattr(backend, "enqueues_in_sisy_database", False):  # sisy's, or a subclass
        return True
    tasks_db = sys.modules.get("django_tasks_db")  # imported if a TASKS backend is its
    if tasks_db is not None and isinstance(backend, tasks_db.DatabaseBackend):
        from django.db import router

        model = importlib.import_module("django_tasks_db.models").DBTaskResult
        return router.db_for_write(model) == procrastinate_seam.database_alias()
    return False


def check_arguments(task: Any, path: str, userdata: Any) -> dict[str, Any]:
    """``userdata`` as the task's keyword arguments: JSON as Django keeps it, binding its signature."""
    if not isinstance(userdata, dict):
        raise TaskTargetError(f"userdata must be a dict of keyword arguments for {path!r}")
    problem = _json_problem(userdata, "userdata")
    if problem:
        raise TaskTargetError(f"userdata of {path!r} {problem}")
    normalize_json = tasks_framework.part("normalize_json")
    try:
        normalised = normalize_json(userdata)
    except (TypeError, ValueError) as exc:
        raise TaskTargetError(f"userdata of {path!r} is not JSON: {exc}") from None
    if normalised != userdata:
        raise TaskTargetError(
            f"userdata of {path!r} changes when Django normalises it to JSON (tuples become "
            "lists, bytes strings): give it as JSON values"
        )
    passed = [name for name in PASSED_BY_SISY if name in userdata]
    if passed:
        raise TaskTargetError(
            f"userdata of {path!r} sets {', '.join(passed)}: sisy passes those "
            "(the run's instant and id) to a task that declares them"
        )
    kwargs = {**userdata, **dict.fromkeys(sisy_parameters(task), None)}
    signature = inspect.signature(task.func)
    args = (None,) if task.takes_context else ()
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TaskTargetError(
            f"userdata {json.dumps(userdata)[:200]} does not bind the parameters of {path!r} "
            f"{signature}: {exc}"
        ) from None
    return dict(userdata)


def _json_problem(value: Any, where: str) -> str | None:
    """A key that is not a string, which JSON would turn into one (the rest of JSON's rules
    are the userdata's own, sisy_pg.limits), or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"has the key {key!r} ({type(key).__name__}) at {where}: JSON keys are strings"
                )
            problem = _json_problem(item, f"{where}.{key}")
            if problem:
                return problem
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{index}]")
            if problem:
                return problem
    return None


def sisy_parameters(task: Any) -> list[str]:
    """The parameters of sisy's (``scheduled_for``, ``run_id``) that the task declares."""
    parameters = inspect.signature(task.func).parameters
    return [
        name
        for name in PASSED_BY_SISY
        if name in parameters
        and parameters[name].kind
        in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


@dataclasses.dataclass(frozen=True)
class Enqueued:
    """What an instant's enqueue gave: the task's result, as the backend returned it."""

    result: Any
    recorded: bool  # False: the run was closed meanwhile (the result is noted nowhere)


@dataclasses.dataclass(frozen=True)
class Enqueuer:
    """Enqueues one schedule's Django task for a run; called in a callable thread of a worker.

    The runner calls it as it calls a callable, with Sisy's message (its
    ``message`` part names the run and its instant).
    """

    task: Any
    kwargs: dict[str, Any]
    using: str  # sisy-pg's database alias

    def __call__(self, message: dict[str, Any]) -> Enqueued:
        run = message["message"]
        passed = {
            SCHEDULED_FOR: _instant_text(run["scheduled_for"]),
            RUN_ID: run["run_id"],
        }
        kwargs = {**self.kwargs, **{name: passed[name] for name in sisy_parameters(self.task)}}
        backend = self.task.get_backend()
        if commits_with_sisy(backend):
            # Enqueued and recorded together, or neither.
            with transaction.atomic(using=self.using):
                result = self.task.enqueue(**kwargs)
                if not self._record(run["run_id"], result):
                    transaction.set_rollback(True, using=self.using)
                    return Enqueued(result, recorded=False)
            return Enqueued(result, recorded=True)
        # At most once: enqueued, then recorded. Whatever fails may have left the task
        # enqueued: the run is never enqueued again (its schedule's retries do not apply).
        try:
            result = self.task.enqueue(**kwargs)
        except Exception as exc:
            raise EnqueueUncertain(
                f"enqueueing on backend {self.task.backend!r} failed ({type(exc).__name__}: "
                f"{exc}); not retried, as the backend may have taken the task (at most once)"
            ) from exc
        try:
            recorded = self._record(run["run_id"], result)
        except Exception as exc:
            raise EnqueueUncertain(
                f"enqueued on backend {self.task.backend!r} as result {result.id}, but the run "
                f"could not record it ({type(exc).__name__}: {exc}); not retried (at most once)"
            ) from exc
        return Enqueued(result, recorded=recorded)

    def _record(self, run_id: int, result: Any) -> bool:
        backend = result.task.get_backend()
        # sisy-pg's own backend: the housekeeping watches the task's job.
        job_id = int(result.id) if getattr(backend, "enqueues_in_sisy_database", False) else None
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                "SELECT sisy_task_enqueued_v1(%s, %s, %s, %s)",
                [run_id, str(result.id), result.backend, job_id],
            )
            row = cursor.fetchone()
        return bool(row and row[0])


def _instant_text(instant: dt.datetime) -> str:
    return instant.isoformat(timespec="milliseconds")


def outcome_of(result: Any) -> tuple[str, str, str]:
    """(run status, error, traceback) for a finished TaskResult."""
    status = tasks_framework.part("TaskResultStatus")
    if result.status == status.SUCCESSFUL:
        return RunStatus.SUCCEEDED, "", ""
    if not result.errors:
        return RunStatus.FAILED, f"the task ended {result.status}", ""
    error = result.errors[-1]
    last_line = error.traceback.strip().splitlines()[-1] if error.traceback.strip() else ""
    return RunStatus.FAILED, last_line or error.exception_class_path, error.traceback
