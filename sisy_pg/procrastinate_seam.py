"""The one seam to procrastinate: all that sisy-pg relies on beyond its documented API.

Everything else in sisy-pg uses procrastinate's documented surface only
(``App.task``, ``JobContext``, the ``procrastinate worker`` command). This
module holds the rest, with its SQL half in the section "The seam to
procrastinate" of ``sql/schema.sql``:

* the App of ``procrastinate.contrib.django`` and its database alias;
* the worker hook. procrastinate documents no place for code that lives as
  long as a worker: worker middleware wraps one job at a time, and
  ``PROCRASTINATE_ON_APP_READY`` runs in every process, web servers included.
  So :func:`install` wraps the App's ``run_worker_async`` and builds the
  Worker itself (``App._worker``, as procrastinate does), to give each
  worker a sisy worker object (:class:`sisy_pg.worker.SisyWorker`) that
  holds it: its ``stop()`` is wrapped so that the object knows when it
  stops, and its ``shutdown_graceful_timeout``, when unset, bounded;
* the worker's database outages (:func:`ride_out_outages`): procrastinate
  3.10 stops a worker whose job fetch or heartbeat fails, a read-only
  database included; here they are retried while the database is away, and
  procrastinate's pool reopened when it is back;
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
  the worker (``tests/e2e/test_pg_restart.py``). The same wrapper listens on
  SISY_LISTEN_DATABASE when set, and swallows sisy's self-addressed probes;
* :data:`PYTHON_REQUIREMENTS` and :data:`SQL_REQUIREMENTS`, what this seam
  needs from procrastinate; ``tests/unit/test_procrastinate_seam.py`` checks them
  against the installed version, so an upgrade that breaks them fails loudly.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import inspect
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import procrastinate
import psycopg
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import manager as procrastinate_manager
from procrastinate import worker as procrastinate_worker
from procrastinate.contrib.django import django_connector, procrastinate_app
from procrastinate.contrib.django import utils as django_utils
from procrastinate.contrib.django.settings import settings as procrastinate_settings
from psycopg import sql as psycopg_sql

logger = logging.getLogger(__name__)

_INSTALLED_MARK = "_sisy_pg_installed"
# Where install() leaves the sisy worker object for the jobs it runs.
_CONTEXT_KEY = "sisy_worker"
# The sisy worker object of the worker running in this context (its side
# tasks, the job listener among them, inherit it).
_current_worker: contextvars.ContextVar[Any] = contextvars.ContextVar("sisy_worker")
#: The ``type`` of sisy's self-addressed notifications on procrastinate's channels
#: (procrastinate ignores types it does not know; keep_listening swallows them).
PROBE_TYPE = "sisy_probe"

#: (object, attribute) pairs this module and the runner use.
PYTHON_REQUIREMENTS: tuple[tuple[Any, str], ...] = (
    (procrastinate.App, "run_worker_async"),
    (procrastinate.App, "_worker"),
    (procrastinate.App, "perform_import_paths"),
    (procrastinate.App, "task"),
    (procrastinate.App, "worker_defaults"),
    (procrastinate.App, "job_manager"),
    # sisy_pg.django_tasks defers its jobs through Django's connection.
    (procrastinate.App, "configure_task"),
    (django_connector, "DjangoConnector"),
    (procrastinate_manager.JobManager, "listen_for_jobs"),
    (procrastinate_manager.JobManager, "fetch_job"),
    (procrastinate_manager.JobManager, "update_heartbeat"),
    (procrastinate_manager.JobManager, "finish_job"),
    (procrastinate_manager.JobManager, "retry_job"),
    (procrastinate_manager, "get_channel_for_queues"),
    (procrastinate_exceptions, "ConnectorException"),
    (procrastinate_worker, "Worker"),
    (procrastinate_worker.Worker, "stop"),
    (procrastinate_worker.Worker, "run"),
    (procrastinate.JobContext, "additional_context"),
    (procrastinate.JobContext, "job"),
    (procrastinate_app, "current_app"),
    (procrastinate_app, "FutureApp"),
    (procrastinate_settings, "DATABASE_ALIAS"),
    (django_utils, "connector_params"),
)

#: What the SQL seam uses, as (kind, name, detail) rows that
#: tests/integration/test_procrastinate_schema_seam.py looks up in the catalog.
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
    name: str | None = None

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
        name=options.get("name", _worker_default("name")),
    )


def sisy_worker_of(context: procrastinate.JobContext) -> Any:
    """The sisy worker object of the worker running a job (set by :func:`install`)."""
    sisy = context.additional_context.get(_CONTEXT_KEY)
    if sisy is None:
        raise RuntimeError(
            "sisy.run ran in a worker not started through the App sisy_pg installed itself on"
        )
    return sisy


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
    delay, for as long as the worker runs (cancelling it stops it). In a
    worker with a sisy worker object, it also: listens on the Django
    database SISY_LISTEN_DATABASE when set (a direct connection, where the
    App's goes through a pooler that drops notifications); hands the sisy
    worker the means to wake the worker's fetch and where to send its
    self-addressed probe; and swallows the probes, telling it they arrived.
    """
    listen_for_jobs = job_manager.listen_for_jobs

    @functools.wraps(listen_for_jobs)
    async def listen_for_jobs_again(*, on_notification: Any, **kwargs: Any) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        sisy = _current_worker.get(None)
        channels = list(procrastinate_manager.get_channel_for_queues(queues=kwargs.get("queues")))
        alias = _listen_alias()

        async def notified(*, channel: str, notification: Any) -> None:
            nonlocal failures
            if failures:
                logger.info(
                    "procrastinate's job LISTEN connection is back",
                    extra={"action": "listen_restored", "attempts": failures},
                )
                failures = 0
            if isinstance(notification, dict) and notification.get("type") == PROBE_TYPE:
                if sisy is not None:
                    sisy.probe_arrived(str(notification.get("token")))
                return
            await on_notification(channel=channel, notification=notification)

        async def wake() -> None:
            await on_notification(channel=channels[0], notification={"type": "job_inserted"})

        while True:
            started = loop.time()
            try:
                if sisy is not None:
                    sisy.listening(wake, channels[0])
                if alias is None:
                    await listen_for_jobs(on_notification=notified, **kwargs)
                    return  # as procrastinate's own: it could not start listening
                await _listen_directly(alias, channels, notified)
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


def _listen_alias() -> str | None:
    from . import conf  # the seam is imported by conf's users; no cycle at import

    alias = conf.settings.LISTEN_DATABASE
    return None if alias is None else str(alias)


async def _listen_directly(
    alias: str, channels: list[str], notified: Callable[..., Coroutine[Any, Any, None]]
) -> None:
    """procrastinate's job LISTEN, on Django database ``alias`` (SISY_LISTEN_DATABASE)."""
    try:
        params = {**connection_params(alias), "application_name": "sisy-job-listener"}
        async with await psycopg.AsyncConnection.connect(**params, autocommit=True) as conn:
            for channel in channels:
                await conn.execute(
                    psycopg_sql.SQL("LISTEN {}").format(psycopg_sql.Identifier(channel))
                )
            async for notification in conn.notifies():
                await notified(
                    channel=notification.channel, notification=json.loads(notification.payload)
                )
    except psycopg.Error as exc:
        raise procrastinate_exceptions.ConnectorException(str(exc)) from exc


def database_away(exc: BaseException) -> bool:
    """Whether an error means the database is away or read-only, for now (worth waiting for).

    A lost or refused connection (no SQLSTATE, class 08), a server shutting
    down (57P01 to 57P03), a read-only database (25006, as after a failover),
    or a pool that could not give a connection in time. Not a statement's own
    failure (a constraint, a cancelled query, a lock timeout): retrying that
    would only hide it. procrastinate's ConnectorException is judged by its
    cause.
    """
    if isinstance(exc, procrastinate_exceptions.ConnectorException):
        return exc.__cause__ is not None and database_away(exc.__cause__)
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = exc.sqlstate
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


#: Seconds between two job fetches while they fail (the database away or read-only).
FETCH_RETRY_DELAY = 1.0


def ride_out_outages(job_manager: procrastinate_manager.JobManager) -> None:
    """Keep a worker alive while its database is unreachable or read-only (a failover).

    procrastinate 3.10 stops a worker when a job fetch or a heartbeat fails
    (the first ends its loop, the second its side-task monitor), and loses a
    job's outcome when its status cannot be written. Here a fetch that fails
    finds no job (the worker waits for its next poll or notification), a
    heartbeat that fails is skipped (the next one comes
    ``update_heartbeat_interval`` later), and a job's status is written
    again until the database takes it. An outage is logged when it starts,
    with its cause, and when it ends.
    """
    outage: dict[str, float] = {}

    def failed(what: str, exc: BaseException) -> None:
        if what not in outage:
            outage[what] = asyncio.get_running_loop().time()
            logger.warning(
                f"procrastinate could not {what} ({exc.__cause__ or exc!r}): the database is "
                "unreachable or read-only; the worker waits for it",
                extra={"action": "database_outage", "operation": what, "exception": repr(exc)},
            )

    def succeeded(what: str) -> None:
        since = outage.pop(what, None)
        if since is not None:
            took = asyncio.get_running_loop().time() - since
            logger.info(
                f"procrastinate can {what} again, after {took:.1f} s",
                extra={"action": "database_back", "operation": what, "seconds": round(took, 3)},
            )

    fetch_job = job_manager.fetch_job

    @functools.wraps(fetch_job)
    async def fetch_job_or_none(*args: Any, **kwargs: Any) -> Any:
        try:
            job = await fetch_job(*args, **kwargs)
        except procrastinate_exceptions.ConnectorException as exc:
            if not database_away(exc):
                # E.g. this worker's row pruned by another worker after a long
                # outage: stop (status 1) for the supervisor to start it afresh.
                logger.error(
                    f"procrastinate could not fetch jobs ({exc.__cause__ or exc!r}): the worker stops",
                    extra={"action": "fetch_failed", "exception": repr(exc.__cause__ or exc)},
                )
                raise
            failed("fetch jobs", exc)
            sisy = _current_worker.get(None)
            if sisy is None:
                await asyncio.sleep(FETCH_RETRY_DELAY)
            else:
                # Not a sleep here: the worker would then wait for its next poll
                # (fetch_job_polling_interval), having cleared the wake-ups meanwhile.
                asyncio.get_running_loop().call_later(
                    FETCH_RETRY_DELAY, sisy.in_background, sisy.wake
                )
            return None
        succeeded("fetch jobs")
        return job

    update_heartbeat = job_manager.update_heartbeat

    @functools.wraps(update_heartbeat)
    async def update_heartbeat_or_skip(*args: Any, **kwargs: Any) -> None:
        try:
            await update_heartbeat(*args, **kwargs)
        except procrastinate_exceptions.ConnectorException as exc:
            if not database_away(exc):
                raise
            failed("update the worker's heartbeat", exc)
            return
        succeeded("update the worker's heartbeat")

    def written_until_taken(method: Callable[..., Coroutine[Any, Any, Any]], what: str) -> Any:
        @functools.wraps(method)
        async def write(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            started = loop.time()
            while True:
                try:
                    result = await method(*args, **kwargs)
                except procrastinate_exceptions.ConnectorException as exc:
                    sisy = _current_worker.get(None)
                    # Bounded: by the outage tolerance, and by the shutdown
                    # timeout once the worker stops (the housekeeping closes
                    # what is left).
                    bound = sisy.write_retry_bound() if sisy is not None else 0.0
                    if not database_away(exc) or loop.time() - started > bound:
                        raise
                    failed(what, exc)
                    await asyncio.sleep(LISTEN_RETRY_DELAYS[-1])
                    continue
                succeeded(what)
                return result

        return write

    job_manager.fetch_job = fetch_job_or_none  # type: ignore[method-assign]
    job_manager.update_heartbeat = update_heartbeat_or_skip  # type: ignore[method-assign]
    job_manager.finish_job = written_until_taken(  # type: ignore[method-assign]
        job_manager.finish_job, "record a job's status"
    )
    job_manager.retry_job = written_until_taken(  # type: ignore[method-assign]
        job_manager.retry_job, "record a job's retry"
    )


async def renew_job_connections(app: procrastinate.App) -> None:
    """Give procrastinate's connector a new pool if its own has no connection to give.

    After an outage, psycopg_pool waits longer and longer between attempts to
    reconnect (1, 2, 4, 8... s), so a worker's job fetches could go on
    failing half a minute after the database came back. Reopening the
    connector (its public close_async/open_async) starts afresh; a fetch
    waiting on the old pool fails at once and is retried.
    """
    connector = app.connector
    try:
        pool = connector.pool  # type: ignore[attr-defined]
    except Exception:  # another connector, or one not open: nothing to renew
        return
    if not pool.closed and pool.get_stats().get("pool_available", 0):
        return
    await connector.close_async()
    await connector.open_async()
    logger.info(
        "procrastinate's connection pool renewed after the outage",
        extra={"action": "job_connections_renewed"},
    )


def install(
    app: procrastinate.App,
    *,
    task_name: str,
    queue: str,
    run_task: Callable[..., Any],
    make_worker: Callable[[WorkerOptions], Any],
) -> None:
    """Register ``run_task`` on ``app``; give each of its workers ``make_worker(options)``.

    The object lives as long as its worker: it must have ``run(worker)``
    (await the procrastinate Worker's ``run()`` and whatever goes beside it)
    and ``stop_requested()``, and a float ``shutdown_timeout``: a worker
    whose ``shutdown_graceful_timeout`` is None stops after that many seconds
    rather than waiting for ever for callables that never return. Jobs find
    the object with :func:`sisy_worker_of`. The job LISTEN connection is
    revived when lost (:func:`keep_listening`) and the worker rides out
    database outages (:func:`ride_out_outages`). Idempotent.
    """
    if getattr(app, _INSTALLED_MARK, False):
        return
    app.task(name=task_name, pass_context=True, queue=queue)(run_task)
    keep_listening(app.job_manager)
    ride_out_outages(app.job_manager)

    @functools.wraps(app.run_worker_async)
    async def run_worker_with_sisy(**kwargs: Any) -> None:
        # As App.run_worker_async, with the Worker object in hand.
        sisy = make_worker(worker_options(app, **kwargs))
        kwargs["additional_context"] = {
            **app.worker_defaults.get("additional_context", {}),
            **kwargs.get("additional_context", {}),
            _CONTEXT_KEY: sisy,
        }
        app.perform_import_paths()  # type: ignore[no-untyped-call]
        worker = app._worker(**kwargs)
        if worker.shutdown_graceful_timeout is None:
            worker.shutdown_graceful_timeout = sisy.shutdown_timeout
        stop = worker.stop

        def stop_and_tell() -> None:
            sisy.stop_requested()
            stop()  # type: ignore[no-untyped-call]

        worker.stop = stop_and_tell  # type: ignore[method-assign]
        token = _current_worker.set(sisy)
        try:
            await sisy.run(worker)
        finally:
            _current_worker.reset(token)

    app.run_worker_async = run_worker_with_sisy  # type: ignore[method-assign]
    setattr(app, _INSTALLED_MARK, True)
