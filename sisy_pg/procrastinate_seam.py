"""The one seam to procrastinate: all that sisy-pg relies on beyond its documented API.

Everything else in sisy-pg uses procrastinate's documented surface only
(``App.task``, ``JobContext``, the ``procrastinate worker`` command). This
module holds the rest, with its SQL half in the section "The seam to
procrastinate" of ``sql/schema.sql``:

* the App of ``procrastinate.contrib.django`` and its database alias;
* the worker hook. procrastinate documents no place for code that lives as
  long as a worker: worker middleware wraps one job at a time, and
  ``PROCRASTINATE_ON_APP_READY`` runs in every process, web servers included.
  So :func:`install` wraps the App's ``run_worker_async`` (the one wrapped
  call) to run the planner beside each worker that serves the sisy queue;
* the worker options sisy reads (``queues``, ``stalled_worker_timeout``: the
  heartbeat age after which procrastinate itself deems a worker stalled);
* the job LISTEN connection, revived after a PostgreSQL restart. A worker
  learns of new jobs through ``app.job_manager.listen_for_jobs``, a side task
  of the worker. procrastinate 3.10 reconnects it once, at once; during a
  restart that attempt fails (the server is still shutting down or not yet
  up), the side task ends with a ``ConnectorException``, and nothing notices
  (the worker's side-task monitor has already returned when the periodic
  deferrer, which has no task to defer, ended at start): the worker then only
  polls, every ``fetch_job_polling_interval``. :func:`install` wraps
  ``listen_for_jobs`` so that a lost connection is re-established, retrying
  every :data:`LISTEN_RETRY_DELAYS` s, and says so in the log (a warning when
  it is lost, a line when the first notification arrives again). Runs are
  back on time within seconds of the server's return, without a restart of
  the worker (``tests/test_pg_restart.py``). Were this impossible, the
  fallback would be to stop the worker with a non-zero exit and a one-line
  reason, for its supervisor to restart it;
* :data:`PYTHON_REQUIREMENTS` and :data:`SQL_REQUIREMENTS`, what this seam
  needs from procrastinate; ``tests/test_procrastinate_seam.py`` checks them
  against the installed version, so an upgrade that breaks them fails loudly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import procrastinate
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import manager as procrastinate_manager
from procrastinate import worker as procrastinate_worker
from procrastinate.contrib.django import procrastinate_app
from procrastinate.contrib.django import utils as django_utils
from procrastinate.contrib.django.settings import settings as procrastinate_settings

logger = logging.getLogger(__name__)

_INSTALLED_MARK = "_sisy_pg_installed"
# Where install() leaves the worker's options for the jobs it runs.
_CONTEXT_KEY = "sisy_worker_options"

#: (object, attribute) pairs this module and the runner use.
PYTHON_REQUIREMENTS: tuple[tuple[Any, str], ...] = (
    (procrastinate.App, "run_worker_async"),
    (procrastinate.App, "task"),
    (procrastinate.App, "worker_defaults"),
    (procrastinate.App, "job_manager"),
    (procrastinate_manager.JobManager, "listen_for_jobs"),
    (procrastinate_exceptions, "ConnectorException"),
    (procrastinate_worker, "Worker"),
    (procrastinate.JobContext, "additional_context"),
    (procrastinate.JobContext, "job"),
    (procrastinate_app, "current_app"),
    (procrastinate_app, "FutureApp"),
    (procrastinate_settings, "DATABASE_ALIAS"),
    (django_utils, "connector_params"),
)

#: What the SQL seam uses, as (kind, name, detail) rows that
#: tests/test_procrastinate_seam.py looks up in the catalog.
SQL_REQUIREMENTS: tuple[tuple[str, str, str], ...] = (
    ("type attribute", "procrastinate_job_to_defer_v1", "queue_name character varying"),
    ("type attribute", "procrastinate_job_to_defer_v1", "task_name character varying"),
    ("type attribute", "procrastinate_job_to_defer_v1", "priority integer"),
    ("type attribute", "procrastinate_job_to_defer_v1", "args jsonb"),
    ("type attribute", "procrastinate_job_to_defer_v1", "scheduled_at timestamp with time zone"),
    ("function", "procrastinate_defer_jobs_v1", "jobs procrastinate_job_to_defer_v1[]"),
    (
        "function",
        "procrastinate_cancel_job_v1",
        "job_id bigint, abort boolean, delete_job boolean",
    ),
    ("column", "procrastinate_jobs", "id bigint"),
    ("column", "procrastinate_jobs", "status procrastinate_job_status"),
    ("column", "procrastinate_jobs", "worker_id bigint"),
    ("column", "procrastinate_workers", "id bigint"),
    ("column", "procrastinate_workers", "last_heartbeat timestamp with time zone"),
    ("enum label", "procrastinate_job_status", "todo"),
    ("enum label", "procrastinate_job_status", "doing"),
)


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """What sisy needs to know of the worker it runs in."""

    queues: tuple[str, ...] | None  # None: every queue
    stalled_worker_timeout: float
    concurrency: int = 1  # how many jobs the worker runs at once (procrastinate's default)

    def serves(self, queue: str) -> bool:
        return not self.queues or queue in self.queues


def _worker_default(option: str) -> Any:
    """procrastinate's default for a Worker option the App does not set."""
    return inspect.signature(procrastinate_worker.Worker).parameters[option].default


def _default_stalled_worker_timeout() -> float:
    return float(_worker_default("stalled_worker_timeout"))


def worker_options(app: procrastinate.App, **kwargs: Any) -> WorkerOptions:
    """The options a worker started with ``kwargs`` on ``app`` runs with."""
    options = {**app.worker_defaults, **kwargs}
    queues = options.get("queues")
    timeout = options.get("stalled_worker_timeout")
    concurrency = options.get("concurrency")
    return WorkerOptions(
        queues=tuple(queues) if queues else None,
        stalled_worker_timeout=float(
            _default_stalled_worker_timeout() if timeout is None else timeout
        ),
        concurrency=int(_worker_default("concurrency") if concurrency is None else concurrency),
    )


def job_worker_options(context: procrastinate.JobContext) -> WorkerOptions:
    """The options of the worker running a job (set by :func:`install`)."""
    options = context.additional_context.get(_CONTEXT_KEY)
    if isinstance(options, WorkerOptions):
        return options
    return worker_options(context.app)


def stalled_worker_timeout() -> float:
    """Heartbeat age (s) after which procrastinate deems a worker stalled (the App's default).

    What ``manage.py sisy health`` calls a live worker; a worker started with
    another ``--stalled-worker-timeout`` is judged by the App's.
    """
    app = django_app()
    if app is None:
        return _default_stalled_worker_timeout()
    return worker_options(app).stalled_worker_timeout


def django_app() -> procrastinate.App | None:
    """procrastinate.contrib.django's App, or None before that app is ready."""
    app = procrastinate_app.current_app
    if isinstance(app, procrastinate_app.FutureApp):
        return None
    return app


def database_alias() -> str:
    """The Django database procrastinate uses (``PROCRASTINATE_DATABASE_ALIAS``)."""
    return str(procrastinate_settings.DATABASE_ALIAS)


def connection_params(alias: str) -> dict[str, Any]:
    """psycopg keyword arguments for Django database ``alias``, as procrastinate's connector gets them."""
    params = django_utils.connector_params(alias)
    params.pop("server_side_binding", None)  # a Django option, not libpq's
    return params


#: Seconds between attempts to re-establish a lost job LISTEN connection
#: (the last one repeats for as long as the database is away).
LISTEN_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)


def keep_listening(job_manager: procrastinate_manager.JobManager) -> None:
    """Make ``job_manager.listen_for_jobs`` re-establish its connection whenever it is lost.

    procrastinate's listener returns or raises only when it cannot (re)connect:
    each database error is logged and the listener started again after a
    delay, for as long as the worker runs (cancelling it stops it).
    """
    listen_for_jobs = job_manager.listen_for_jobs

    @functools.wraps(listen_for_jobs)
    async def listen_for_jobs_again(*, on_notification: Any, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        failures = 0

        async def notified(*args: Any, **kw: Any) -> None:
            nonlocal failures
            if failures:
                logger.info(
                    "procrastinate's job LISTEN connection is back",
                    extra={"action": "listen_restored", "attempts": failures},
                )
                failures = 0
            await on_notification(*args, **kw)

        while True:
            started = loop.time()
            try:
                await listen_for_jobs(on_notification=notified, **kwargs)
                return  # as procrastinate's own: it could not start listening
            except procrastinate_exceptions.ConnectorException as exc:
                if loop.time() - started > LISTEN_RETRY_DELAYS[-1]:
                    failures = 0  # it was listening: a new outage
                delay = LISTEN_RETRY_DELAYS[min(failures, len(LISTEN_RETRY_DELAYS) - 1)]
                cause = repr(exc.__cause__ or exc)
                failures += 1
                logger.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    f"procrastinate's job LISTEN connection was lost ({cause}); "
                    f"reconnecting every {LISTEN_RETRY_DELAYS[-1]} s at most, "
                    "jobs are only polled meanwhile",
                    extra={"action": "listen_lost", "exception": cause, "retry_in": delay},
                )
                await asyncio.sleep(delay)

    job_manager.listen_for_jobs = listen_for_jobs_again  # type: ignore[method-assign]


PlannerFactory = Callable[[WorkerOptions], Coroutine[Any, Any, None] | None]


def install(
    app: procrastinate.App,
    *,
    task_name: str,
    queue: str,
    run_task: Callable[..., Any],
    start_planner: PlannerFactory,
    worker_stopped: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """Register ``run_task`` on ``app``; run ``start_planner(options)`` beside its workers.

    ``start_planner`` returns the coroutine to run for as long as the
    worker runs, or None for a worker that must not plan; ``worker_stopped``
    is awaited once the worker has stopped (its jobs ended). The workers' job
    LISTEN connection is revived when lost (:func:`keep_listening`). Idempotent.
    """
    if getattr(app, _INSTALLED_MARK, False):
        return
    app.task(name=task_name, pass_context=True, queue=queue)(run_task)
    keep_listening(app.job_manager)
    run_worker_async = app.run_worker_async

    @functools.wraps(run_worker_async)
    async def run_worker_with_planner(**kwargs: Any) -> None:
        options = worker_options(app, **kwargs)
        kwargs["additional_context"] = {
            **app.worker_defaults.get("additional_context", {}),
            **kwargs.get("additional_context", {}),
            _CONTEXT_KEY: options,
        }
        planner = start_planner(options)
        planner_task = planner and asyncio.create_task(planner, name="sisy-planner")
        try:
            await run_worker_async(**kwargs)
        finally:
            if planner_task:
                planner_task.cancel()
                await asyncio.gather(planner_task, return_exceptions=True)
            await worker_stopped()

    app.run_worker_async = run_worker_with_planner  # type: ignore[method-assign]
    setattr(app, _INSTALLED_MARK, True)
