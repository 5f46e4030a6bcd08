"""One object per procrastinate worker: sisy's side of it, from its start to its stop.

``SisyConfig.ready()`` calls :func:`install` on the App of
``procrastinate.contrib.django`` (which must come first in INSTALLED_APPS).
Through :mod:`~sisy_pg.procrastinate_seam` it registers the ``sisy.run``
task and gives every worker a :class:`SisyWorker`, which owns, for exactly
as long as the worker runs: its options, its callable slots
(:mod:`~sisy_pg.slots`), its estimate of the database's clock, its runners'
connections, its planner (in a worker that serves the sisy queue), and the
watch that reports it to the database (``sisy_worker``, read by ``manage.py
sisy health``), checks that notifications arrive, and makes it exit when
every slot is stuck. Processes that only defer jobs (web servers,
``migrate``, shells) have none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import procrastinate

from . import conf, procrastinate_seam, runner
from .planner import Planner
from .runner import DatabaseClock, Outcome
from .slots import CallableSlots, default_share
from .store import RunnerPool, Store, default_store

logger = logging.getLogger(__name__)

#: Exit status of a worker that stopped because all its slots were stuck.
STUCK_EXIT_STATUS = 3
# Seconds between two reports of a worker's state to the database.
REPORT_EVERY = 5.0
# Seconds a self-addressed notification may take before notifications count as lost.
PROBE_WAIT = 2.0
# Seconds between the job listener's (re)connection and its first probe.
PROBE_SETTLE = 1.0


def runs_per_job(options: procrastinate_seam.WorkerOptions) -> int:
    """How many runs of one instant a job carries, for a worker with ``options``.

    A job's runs start together only if its worker has as many slots: a group
    no larger than the concurrency, so that none waits behind another while a
    second worker sits idle.
    """
    return max(1, min(int(conf.settings.RUNS_PER_JOB), options.concurrency))


def make_planner(
    options: procrastinate_seam.WorkerOptions,
    wake_worker: Callable[[], Awaitable[None]] | None = None,
    store: Store | None = None,
) -> Planner:
    """A planner configured by the SISY_* settings, for a worker with ``options``."""
    settings = conf.settings
    return Planner(
        store or default_store(),
        queue=settings.QUEUE,
        task_name=runner.RUN_TASK_NAME,
        missed_all_limit=int(settings.MISSED_ALL_LIMIT),
        lead_time=float(settings.LEAD_TIME),
        max_sleep=float(settings.PLANNER_MAX_SLEEP),
        batch_size=int(settings.CLAIM_BATCH_SIZE),
        runs_per_job=runs_per_job(options),
        retention_days=settings.RUN_RETENTION_DAYS,
        stalled_worker_timeout=options.stalled_worker_timeout,
        wake_worker=wake_worker,
    )


class SisyWorker:
    """sisy's side of one procrastinate worker (see the module); the jobs it runs find it in their context."""

    def __init__(
        self, options: procrastinate_seam.WorkerOptions, *, store: Store | None = None
    ) -> None:
        settings = conf.settings
        self.options = options
        self.store = store or default_store()
        self.label = f"{socket.gethostname()}:{os.getpid()}:{options.name or 'worker'}"
        self.slots = CallableSlots(
            options.concurrency, default_share(options.concurrency, settings.TASK_SLOTS)
        )
        self.clock = DatabaseClock()
        self.pool = RunnerPool(
            self.store.connection_params(),
            options.concurrency,
            outage_tolerance=float(settings.OUTAGE_TOLERANCE),
            stall_warning=float(settings.STALL_WARNING),
            on_back=self._database_back,
        )
        self.plans = bool(settings.PLANNER_ENABLED and options.serves(settings.QUEUE))
        self.planner = make_planner(options, self.wake, self.store) if self.plans else None
        self.shutdown_timeout = float(settings.SHUTDOWN_TIMEOUT)
        stuck_exit = settings.STUCK_EXIT_AFTER
        self.stuck_exit_after = None if stuck_exit is None else float(stuck_exit)
        self.stopping = False
        self._stopping_at = 0.0  # monotonic
        self.exit_status = 0
        # Set by the job listener (procrastinate_seam.keep_listening): wakes
        # the worker's fetch as a job notification would, and the channel
        # a probe goes to.
        self._wake_fetch: Callable[[], Awaitable[None]] | None = None
        self._probe_channel: str | None = None
        self._probe: tuple[str, float] | None = None  # token, loop time sent
        self._probe_due = float("inf")  # loop time of the next probe
        self.job_notifications = "unknown"
        self._worker: procrastinate.worker.Worker | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._reported_as: int | None = None  # the worker id its sisy_worker row has

    # --- the worker's life ------------------------------------------------------

    async def run(self, worker: procrastinate.worker.Worker) -> None:
        """Run ``worker`` and, beside it, the planner and the watch; close all when it stops."""
        self._worker = worker
        if self.planner is None:
            logger.info(
                "sisy planner not started in this worker",
                extra={"action": "planner_disabled", "queues": list(self.options.queues or [])},
            )
        else:
            settings = conf.settings
            logger.info(
                f"sisy planner starting: this worker fires the tasks of queue {settings.QUEUE!r} "
                f"and runs them (worker queues: {', '.join(self.options.queues or ()) or 'all'}; "
                f"concurrency {self.options.concurrency}, at most {self.slots.share} per task; "
                f"{runs_per_job(self.options)} run(s) per job at most)",
                extra={
                    "action": "planner_start",
                    "queue": settings.QUEUE,
                    "worker_queues": list(self.options.queues or []),
                    "concurrency": self.options.concurrency,
                    "task_slots": self.slots.share,
                },
            )
        side = [asyncio.create_task(self._watch(), name="sisy-watch")]
        if self.planner is not None:
            side.append(asyncio.create_task(self.planner.run(), name="sisy-planner"))
        try:
            await worker.run()  # type: ignore[no-untyped-call]
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await self._close()
        self._exit()

    def stop_requested(self) -> None:
        """The worker was asked to stop (a signal, or the stuck-slots rule)."""
        if not self.stopping:
            self.stopping = True
            self._stopping_at = time.monotonic()
            if self.slots.held:
                logger.info(
                    f"sisy: {self.slots.held} callable(s) still running; the worker waits up to "
                    f"{self.shutdown_timeout:g} s for them, then records them as interrupted",
                    extra={"action": "worker_stopping", "running": self.slots.held},
                )

    async def _close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._reported_as is not None:
            try:  # not for long: the database may be what stopped us
                await asyncio.wait_for(
                    self.store.worker_gone(self.pool.query, worker_id=self._reported_as), 2.0
                )
            except Exception as exc:
                logger.debug(f"sisy could not delete this worker's row: {exc!r}")
        await self.pool.close()
        self.slots.close()

    def _exit(self) -> None:
        """Leave the process if threads are still in callables (only the process can end them)."""
        if self.slots.held:
            logger.warning(
                f"sisy: {self.slots.held} callable thread(s) never returned; the process exits "
                "without them",
                extra={"action": "threads_abandoned", "count": self.slots.held},
            )
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(self.exit_status)
        if self.exit_status:
            raise SystemExit(self.exit_status)

    async def _database_back(self) -> None:
        """The database answers again after an outage: so must procrastinate's connections.

        In the background (shielded from the statement that noticed it, which
        its caller may cancel half-way through a reopening).
        """
        if self._worker is not None:
            app = self._worker.app
            self.in_background(lambda: procrastinate_seam.renew_job_connections(app))

    def in_background(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run ``work()`` in a task this worker keeps (and cancels when it stops)."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(work())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def write_retry_bound(self) -> float:
        """Seconds a failing write of a job's status may be retried: until the outage
        tolerance, or the shutdown timeout once the worker stops."""
        if self.stopping:
            return max(0.0, self.shutdown_timeout - (time.monotonic() - self._stopping_at))
        return self.pool.outage_tolerance

    # --- jobs ---------------------------------------------------------------------

    def when_returned(
        self,
        thread: asyncio.Future[Outcome],
        record: Callable[[Outcome], Coroutine[Any, Any, Any]],
    ) -> None:
        """Once ``thread`` returns (a run given up on), record its outcome in the background."""

        def returned(future: asyncio.Future[Outcome]) -> None:
            if future.cancelled() or future.exception() is not None or self.stopping:
                return
            outcome = future.result()
            self.in_background(lambda: record(outcome))

        thread.add_done_callback(returned)

    # --- the job listener (procrastinate_seam.keep_listening) ---------------------

    def listening(self, wake: Callable[[], Awaitable[None]], probe_channel: str) -> None:
        """The job listener (re)connects: how to wake the worker's fetch, where to send a probe.

        Its connection is probed PROBE_SETTLE seconds later (its LISTEN is
        not done yet: a probe sent now could be missed by a listener that
        works).
        """
        self._wake_fetch, self._probe_channel = wake, probe_channel
        self._probe = None
        self._probe_due = asyncio.get_running_loop().time() + PROBE_SETTLE

    def probe_arrived(self, token: str) -> None:
        if self._probe is None or self._probe[0] != token:
            return
        self._probe = None
        if self.job_notifications == "lost":
            logger.info(
                "Job notifications reach this worker again",
                extra={"action": "notifications_restored", "connection": "jobs"},
            )
        self.job_notifications = "ok"

    async def wake(self) -> None:
        """Make the worker fetch jobs now (the planner just deferred some, or we poll)."""
        if self._wake_fetch is not None:
            await self._wake_fetch()

    # --- the watch ----------------------------------------------------------------

    async def _watch(self) -> None:
        """Report, probe, poll, and exit when stuck; until the worker stops."""
        loop = asyncio.get_running_loop()
        settings = conf.settings
        poll = float(settings.POLL_INTERVAL)
        probe_every = float(settings.NOTIFY_PROBE_INTERVAL)
        reported_at = float("-inf")
        while True:
            now = loop.time()
            try:
                if now - reported_at >= REPORT_EVERY or (
                    self._reported_as is None and self._worker and self._worker.worker_id
                ):
                    reported_at = now
                    # Bounded: the pool retries through an outage, the watch must go on.
                    await asyncio.wait_for(self._report(), REPORT_EVERY)
                # Not once stopping: the listener is cancelled then, a probe lost.
                if self._probe_channel is not None and not self.stopping:
                    if self._probe is None and now >= self._probe_due:
                        self._probe_due = now + probe_every
                        await asyncio.wait_for(self._send_probe(), PROBE_WAIT)
                    elif self._probe is not None and now - self._probe[1] > PROBE_WAIT:
                        self._probe = None
                        self._notifications_lost()
                if self.job_notifications == "lost":
                    await self.wake()
                self._check_stuck()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a report lost in an outage: the pool logs outages
                logger.debug(f"sisy watch: {exc!r}", exc_info=exc)
            await asyncio.sleep(min(poll, 1.0) if self.job_notifications == "lost" else 0.5)

    async def _send_probe(self) -> None:
        """NOTIFY the job listener's channel; it is expected back from the moment it is sent.

        Its token is noted first (it may come back before the NOTIFY's own
        answer), its clock started only once it is sent (a slow send is not
        a lost notification).
        """
        token = uuid.uuid4().hex
        payload = json.dumps({"type": procrastinate_seam.PROBE_TYPE, "token": token})
        assert self._probe_channel is not None
        self._probe = (token, float("inf"))
        try:
            await self.store.send_job_probe(
                self.pool.query, channel=self._probe_channel, payload=payload
            )
        except BaseException:
            self._probe = None
            raise
        if self._probe is not None and self._probe[0] == token:
            self._probe = (token, asyncio.get_running_loop().time())

    def _notifications_lost(self) -> None:
        if self.job_notifications != "lost":
            logger.warning(
                "Notifications do not reach this worker's job LISTEN connection: a connection "
                "pooler in transaction mode (PgBouncer pool_mode=transaction) drops them. Set "
                "SISY_LISTEN_DATABASE to the alias of a direct connection "
                "(docs/operations.md#connection-poolers); meanwhile the worker polls for jobs "
                f"every {float(conf.settings.POLL_INTERVAL):g} s",
                extra={"action": "notifications_lost", "connection": "jobs"},
            )
        self.job_notifications = "lost"

    def notifications(self) -> str:
        """'lost' if any LISTEN connection of this worker gets no notification, else 'ok'/'unknown'."""
        states = {self.job_notifications}
        if self.planner is not None:
            states.add(self.planner.notifications)
        for state in ("lost", "unknown"):
            if state in states:
                return state
        return "ok"

    async def _report(self) -> None:
        worker_id = self._worker.worker_id if self._worker else None
        if worker_id is None:
            return
        stuck = self.slots.stuck()
        full_since = self.slots.full_since
        details: dict[str, Any] = {
            "task_slots": self.slots.share,
            "stuck_tasks": sorted({str(held.task) for held in stuck}),
            "stuck_runs": sorted(held.run_id for held in stuck if held.run_id is not None),
            "slots_full_for": None
            if full_since is None
            else round(time.monotonic() - full_since, 1),
        }
        await self.store.worker_seen(
            self.pool.query,
            worker_id=worker_id,
            name=self.label,
            queues=list(self.options.queues) if self.options.queues else None,
            plans=self.plans,
            concurrency=self.slots.size,
            slots_held=self.slots.held,
            slots_stuck=len(stuck),
            notifications=self.notifications(),
            details=details,
        )
        self._reported_as = worker_id

    def _check_stuck(self) -> None:
        """Every slot held by a run past its timeout for too long: exit, for a supervisor to restart."""
        if self.stuck_exit_after is None or self.stopping or self._worker is None:
            return
        stuck = self.slots.stuck()
        if len(stuck) < self.slots.size:
            return
        since = max(held.stuck_since or 0.0 for held in stuck)
        if time.monotonic() - since < self.stuck_exit_after:
            return
        tasks = ", ".join(sorted({str(held.task) for held in stuck}))
        logger.error(
            f"sisy: all {self.slots.size} callable slots of this worker are held by runs that "
            f"timed out and never returned (tasks {tasks}), for {self.stuck_exit_after:g} s: "
            f"the worker exits with status {STUCK_EXIT_STATUS} for its supervisor to restart it "
            "(docs/operations.md#supervising-workers)",
            extra={"action": "slots_stuck_exit", "tasks": tasks},
        )
        self.exit_status = STUCK_EXIT_STATUS
        self._worker.stop()  # type: ignore[no-untyped-call]


def install(app: procrastinate.App) -> None:
    """Register sisy's task on ``app`` and give each of its workers a SisyWorker (idempotent)."""
    procrastinate_seam.install(
        app,
        task_name=runner.RUN_TASK_NAME,
        queue=conf.settings.QUEUE,
        run_task=runner.run_task,
        make_worker=SisyWorker,
    )
