"""What the job of a Django task carries, and the Task it names.

One procrastinate task, :data:`TASK_NAME`, executes every Django task of a
ProcrastinateBackend. Its job's arguments say which, with what: the Task's
dotted path (``task_path``, its ``module_path``), the backend alias, the
task's ``args`` and ``kwargs``, the retries the backend allowed when it was
enqueued (``retries``, ``retry_delay``) and its ``run_after``. The job's
queue and priority are the task's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

from .. import callables, tasks_framework
from .errors import JobRefused

#: The procrastinate task that executes the jobs of Django tasks.
TASK_NAME = "sisy.django_task"


@dataclasses.dataclass(frozen=True)
class JobArgs:
    task_path: str
    backend: str
    args: list[Any]
    kwargs: dict[str, Any]
    retries: int = 0
    retry_delay: float = 0.0
    run_after: dt.datetime | None = None

    def as_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["run_after"] = None if self.run_after is None else self.run_after.isoformat()
        return fields


def parse(job_kwargs: dict[str, Any]) -> JobArgs:
    """The arguments of a job of :data:`TASK_NAME`; JobRefused if they are not the backend's."""
    try:
        task_path, backend = job_kwargs["task_path"], job_kwargs["backend"]
        args, kwargs = job_kwargs["args"], job_kwargs["kwargs"]
    except KeyError as exc:
        raise JobRefused(f"the job's arguments lack {exc.args[0]!r}") from None
    retries = job_kwargs.get("retries", 0)
    retry_delay = job_kwargs.get("retry_delay", 0)
    run_after = job_kwargs.get("run_after")
    if not (isinstance(task_path, str) and isinstance(backend, str)):
        raise JobRefused("the job's task_path and backend must be strings")
    if not (isinstance(args, list) and isinstance(kwargs, dict)):
        raise JobRefused("the job's args must be a list and its kwargs an object")
    if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
        raise JobRefused(f"the job's retries must be a whole number >= 0, not {retries!r}")
    if not (
        isinstance(retry_delay, (int, float))
        and not isinstance(retry_delay, bool)
        and math.isfinite(retry_delay)
        and retry_delay >= 0
    ):
        raise JobRefused(f"the job's retry_delay must be seconds >= 0, not {retry_delay!r}")
    try:
        after = None if run_after is None else dt.datetime.fromisoformat(run_after)
    except (TypeError, ValueError):
        raise JobRefused(f"the job's run_after is not an ISO 8601 instant: {run_after!r}") from None
    return JobArgs(task_path, backend, args, kwargs, retries, float(retry_delay), after)


def task_named(job: JobArgs, *, queue_name: str, priority: int) -> Any:
    """The Task a job names, as it was enqueued (backend, queue, priority, run_after).

    The path is checked against SISY_ALLOWED_CALLABLES before anything is
    imported. JobRefused when it is refused, does not import, names no
    Task, or a Task whose backend is not a ProcrastinateBackend or refuses
    it (its ``validate_task``: an unknown alias, a queue it does not serve).
    """
    from .backend import ProcrastinateBackend

    path = job.task_path
    try:
        found = callables.django_task(path)
    except callables.CallableError as exc:
        raise JobRefused(str(exc)) from exc
    refusals = (tasks_framework.part("InvalidTask"), tasks_framework.part("InvalidTaskBackend"))
    try:
        task = found.using(
            backend=job.backend, queue_name=queue_name, priority=priority, run_after=job.run_after
        )
    except refusals as exc:
        raise JobRefused(f"{path!r} on backend {job.backend!r}: {exc}") from exc
    backend = task.get_backend()
    if not isinstance(backend, ProcrastinateBackend):
        raise JobRefused(
            f"{path!r}: backend {job.backend!r} is a {type(backend).__name__}, "
            "not a ProcrastinateBackend: its jobs are not this worker's to run"
        )
    return task
