"""Hooks sisy-pg into procrastinate's worker: the run task, and the planner beside it.

``SisyConfig.ready()`` calls :func:`install` on the procrastinate app of
``procrastinate.contrib.django`` (which must come first in INSTALLED_APPS, as
procrastinate documents for apps that customise it at start-up). It

* registers the ``sisy.run`` task, and
* wraps the app's ``run_worker_async`` so that every worker that serves the
  sisy queue runs a :class:`~sisy_pg.planner.Planner` on its event loop for
  exactly as long as the worker runs. Processes that only defer jobs (web
  servers, ``migrate``, shells) never start a planner.

Tested with procrastinate 3.10 (the range pinned in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import procrastinate

from . import conf, runner
from .planner import Planner
from .store import Store

logger = logging.getLogger(__name__)

_INSTALLED_MARK = "_sisy_pg_installed"


def serves_queue(queues: Any, queue: str) -> bool:
    """Whether a worker started with ``queues`` (None = all) takes ``queue``."""
    return not queues or queue in queues


def make_planner(store: Store) -> Planner:
    settings = conf.settings
    return Planner(
        store,
        queue=settings.QUEUE,
        task_name=runner.RUN_TASK_NAME,
        catchup_window=float(settings.CATCHUP_WINDOW),
        lead_time=float(settings.LEAD_TIME),
        max_sleep=float(settings.PLANNER_MAX_SLEEP),
        batch_size=int(settings.CLAIM_BATCH_SIZE),
        retention_days=settings.RUN_RETENTION_DAYS,
    )


def install(app: procrastinate.App, store: Store) -> None:
    """Register sisy's task on ``app`` and run a planner in its workers (idempotent)."""
    if getattr(app, _INSTALLED_MARK, False):
        return
    app.task(name=runner.RUN_TASK_NAME, pass_context=True, queue=conf.settings.QUEUE)(
        runner.run_task
    )
    run_worker_async = app.run_worker_async

    @functools.wraps(run_worker_async)
    async def run_worker_with_planner(**kwargs: Any) -> None:
        queues = {**app.worker_defaults, **kwargs}.get("queues")
        if not (conf.settings.PLANNER_ENABLED and serves_queue(queues, conf.settings.QUEUE)):
            logger.info(
                "sisy planner not started in this worker",
                extra={"action": "planner_disabled", "queues": list(queues or [])},
            )
            await run_worker_async(**kwargs)
            return
        planner_task = asyncio.create_task(make_planner(store).run(), name="sisy-planner")
        try:
            await run_worker_async(**kwargs)
        finally:
            planner_task.cancel()
            await asyncio.gather(planner_task, return_exceptions=True)

    app.run_worker_async = run_worker_with_planner  # type: ignore[method-assign]
    setattr(app, _INSTALLED_MARK, True)
