"""Signals a worker sends about runs: one started, one finished, an instant it chose not to run.

Connect receivers as for any Django signal (``@receiver(run_finished)`` in a
module your ``AppConfig.ready()`` imports); they are called in the worker,
with ``sender`` the ``TaskRun`` model and these keyword arguments:

* :data:`run_started` (``run``, ``task``): in the run's callable thread, just
  before its callable is called;
* :data:`run_finished` (``run``, ``task``, ``status``): once a run that ran
  is recorded ``succeeded``, ``failed`` or ``timed_out``;
* :data:`run_not_run` (``run``, ``task``, ``reason``): once a worker recorded
  an instant it does not run (the planner's ``missed``, ``coalesced``,
  ``overlap``, ``backlog``; the runner's ``late``, ``overlap``,
  ``fair_share``).

``run`` is the ``TaskRun`` as the database has it when the signal is sent.
Every signal is sent with ``send_robust``: a receiver that raises is logged
and breaks neither the run nor the planner. :data:`run_finished` and
:data:`run_not_run` are sent after their record committed, from a thread of
the worker's own, in order: a slow receiver delays no run and not the
planner. Nothing is done, and no row read, for a signal without receivers.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import datetime as dt
import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections
from django.db.models import Q
from django.dispatch import Signal

from .vocabulary import RunStatus

if TYPE_CHECKING:
    from . import policies
    from .models import TaskRun

logger = logging.getLogger(__name__)

#: A run is starting: ``run`` (running), ``task``. Sent in its callable's thread.
run_started = Signal()
#: A run ended: ``run``, ``task``, ``status`` (succeeded, failed or timed_out).
run_finished = Signal()
#: An instant a worker decided not to run: ``run`` (missed or skipped), ``task``, ``reason``.
run_not_run = Signal()

# The statuses of a run that ran and ended: what run_finished tells.
ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT)
# Seconds a stopping process waits for the signals still to be sent.
FLUSH_AT_EXIT = 5.0


def _run_model() -> type[TaskRun]:
    from .models import TaskRun

    return TaskRun


def _has_receivers(signal: Signal) -> bool:
    return signal.has_listeners(_run_model())


def _send(signal: Signal, name: str, run: TaskRun, **kwargs: Any) -> None:
    """Send ``signal`` robustly; log each receiver that raised, with its traceback."""
    for receiver, response in signal.send_robust(
        sender=_run_model(), run=run, task=run.task, **kwargs
    ):
        if isinstance(response, Exception):
            where = getattr(receiver, "__qualname__", repr(receiver))
            logger.error(
                f"A receiver of sisy_pg.signals.{name} ({where}) raised {response!r} for run "
                f"{run.pk}; the run is not affected",
                exc_info=response,
                extra={
                    "action": "signal_receiver_failed",
                    "signal": name,
                    "receiver": where,
                    "run_id": run.pk,
                },
            )


# --- run_started, in the callable's thread ----------------------------------------


def announcer(run_id: int, using: str) -> Callable[[], None] | None:
    """What sends run_started for ``run_id`` in its callable's thread; None without receivers."""
    if not _has_receivers(run_started):
        return None
    return functools.partial(_announce, run_id, using)


def _announce(run_id: int, using: str) -> None:
    """Read the run and send run_started; never raises (the callable is called whatever)."""
    try:
        run = _run_model().objects.using(using).select_related("task").filter(pk=run_id).first()
    except Exception as exc:
        logger.error(
            f"sisy could not read run {run_id} to send run_started: {exc!r}",
            extra={"action": "signal_not_sent", "signal": "run_started", "run_id": run_id},
        )
        return
    if run is not None:
        _send(run_started, "run_started", run)


# --- run_finished and run_not_run, after the record committed -------------------


@dataclasses.dataclass(frozen=True)
class _Sending:
    """A signal to send about a run, found by its id or by (task, instant, status)."""

    finished: bool  # run_finished, else run_not_run
    using: str
    run_id: int | None = None
    task_id: int | None = None
    scheduled_for: dt.datetime | None = None
    status: str | None = None


def finished(using: str, run_ids: Iterable[int]) -> None:
    """Send run_finished for the runs ``run_ids`` if they ran and ended (else nothing)."""
    if _has_receivers(run_finished):
        for run_id in run_ids:
            _deliveries.post(_Sending(True, using, run_id=run_id))


def not_run(using: str, run_ids: Iterable[int]) -> None:
    """Send run_not_run for the runs ``run_ids``, which a runner did not start."""
    if _has_receivers(run_not_run):
        for run_id in run_ids:
            _deliveries.post(_Sending(False, using, run_id=run_id))


def decided(using: str, records: Iterable[tuple[int, policies.Record]]) -> None:
    """Send run_not_run for the instants a planner recorded as not run (committed)."""
    if not _has_receivers(run_not_run):
        return
    for task_id, record in records:
        if record.status != RunStatus.QUEUED:
            _deliveries.post(
                _Sending(
                    False,
                    using,
                    task_id=task_id,
                    scheduled_for=record.instant,
                    status=record.status,
                )
            )


def _deliver(batch: list[_Sending]) -> None:
    """Read the runs of ``batch`` (one query per database) and send their signals, in order."""
    model = _run_model()
    by_id: dict[tuple[str, int], TaskRun] = {}
    by_instant: dict[tuple[str, int, dt.datetime, str], TaskRun] = {}
    grouped: dict[str, list[_Sending]] = collections.defaultdict(list)
    for sending in batch:
        grouped[sending.using].append(sending)
    for using, sendings in grouped.items():
        ids = [s.run_id for s in sendings if s.run_id is not None]
        at = Q()
        for s in sendings:
            if s.run_id is None:
                # The status too: a row another planner inserted is not this decision.
                at |= Q(task_id=s.task_id, scheduled_for=s.scheduled_for, status=s.status)
        runs = model.objects.using(using).select_related("task")
        for run in runs.filter(Q(pk__in=ids) | at) if ids or at else ():
            by_id[using, run.pk] = run
            by_instant[using, run.task_id, run.scheduled_for, run.status] = run
    for s in batch:
        if s.run_id is not None:
            found = by_id.get((s.using, s.run_id))
        else:
            assert s.task_id is not None and s.scheduled_for is not None and s.status is not None
            found = by_instant.get((s.using, s.task_id, s.scheduled_for, s.status))
        if found is None:
            continue  # gone (its task deleted), or not what was decided
        if s.finished:
            if found.status in ENDED:
                _send(run_finished, "run_finished", found, status=found.status)
        elif found.status in (RunStatus.MISSED, RunStatus.SKIPPED):
            reason = found.details.get("reason") if isinstance(found.details, dict) else None
            _send(run_not_run, "run_not_run", found, reason=reason or found.status)


class _Deliveries:
    """One daemon thread of the process sends run_finished and run_not_run, in order.

    It takes what is waiting in batches, with Django's connection handling
    around each batch as around a request. A daemon thread, so that a
    receiver that hangs cannot keep a stopping worker alive: at exit, the
    process waits FLUSH_AT_EXIT seconds at most for what is still to send.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Sending] = queue.SimpleQueue()
        self._pending = 0
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def post(self, sending: _Sending) -> None:
        with self._done:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="sisy-signals", daemon=True
                )
                self._thread.start()
                atexit.register(self.flush, FLUSH_AT_EXIT)
        self._queue.put(sending)

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                close_old_connections()
                _deliver(batch)
            except Exception as exc:
                logger.error(
                    f"sisy could not send {len(batch)} signal(s): {exc!r}",
                    exc_info=exc,
                    extra={"action": "signal_not_sent", "count": len(batch)},
                )
            finally:
                try:
                    close_old_connections()
                finally:
                    with self._done:
                        self._pending -= len(batch)
                        self._done.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything posted is sent; False if ``timeout`` passed first."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)


_deliveries = _Deliveries()
