"""Hooks sisy-pg into procrastinate's workers: the run task, and a planner beside each worker.

``SisyConfig.ready()`` calls :func:`install` on the App of
``procrastinate.contrib.django`` (which must come first in INSTALLED_APPS).
Through :mod:`~sisy_pg.procrastinate_seam` it registers the ``sisy.run``
task and runs a :class:`~sisy_pg.planner.Planner` on the event loop of every
worker that serves the sisy queue, for exactly as long as the worker runs.
Processes that only defer jobs (web servers, ``migrate``, shells) never
start a planner.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

import procrastinate

from . import conf, procrastinate_seam, runner
from .planner import Planner
from .store import default_store

logger = logging.getLogger(__name__)


def runs_per_job(options: procrastinate_seam.WorkerOptions) -> int:
    """How many runs of one instant a job carries, for a worker with ``options``.

    A job's runs start together only if its worker has as many slots: a group
    no larger than the concurrency, so that none waits behind another while a
    second worker sits idle.
    """
    return max(1, min(int(conf.settings.RUNS_PER_JOB), options.concurrency))


def make_planner(options: procrastinate_seam.WorkerOptions) -> Planner:
    """A planner configured by the SISY_* settings, for a worker with ``options``."""
    settings = conf.settings
    return Planner(
        default_store(),
        queue=settings.QUEUE,
        task_name=runner.RUN_TASK_NAME,
        missed_all_limit=int(settings.MISSED_ALL_LIMIT),
        lead_time=float(settings.LEAD_TIME),
        max_sleep=float(settings.PLANNER_MAX_SLEEP),
        batch_size=int(settings.CLAIM_BATCH_SIZE),
        runs_per_job=runs_per_job(options),
        retention_days=settings.RUN_RETENTION_DAYS,
        stalled_worker_timeout=options.stalled_worker_timeout,
    )


def start_planner(options: procrastinate_seam.WorkerOptions) -> Coroutine[Any, Any, None] | None:
    """The planner to run beside a worker with ``options``, or None if it must not plan."""
    settings = conf.settings
    if not (settings.PLANNER_ENABLED and options.serves(settings.QUEUE)):
        logger.info(
            "sisy planner not started in this worker",
            extra={"action": "planner_disabled", "queues": list(options.queues or [])},
        )
        return None
    logger.info(
        f"sisy planner starting: this worker fires the tasks of queue {settings.QUEUE!r} and "
        f"runs them (worker queues: {', '.join(options.queues or ()) or 'all'}; "
        f"concurrency {options.concurrency}; "
        f"{runs_per_job(options)} run(s) per job at most)",
        extra={
            "action": "planner_start",
            "queue": settings.QUEUE,
            "worker_queues": list(options.queues or []),
            "concurrency": options.concurrency,
        },
    )
    return make_planner(options).run()


def install(app: procrastinate.App) -> None:
    """Register sisy's task on ``app`` and run a planner in its workers (idempotent)."""
    procrastinate_seam.install(
        app,
        task_name=runner.RUN_TASK_NAME,
        queue=conf.settings.QUEUE,
        run_task=runner.run_task,
        start_planner=start_planner,
        worker_stopped=default_store().close_runner_pool,
    )
