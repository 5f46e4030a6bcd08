"""Backfill: run the past instants of a task's schedule in a range, each one once.

The request is the database's (``sisy_request_backfill_v1``; in psql,
``sisy_backfill``): it is refused, as a run now is, for a task paused,
finished or broken. The instants are computed here, by the planner's own
arithmetic (croniter in the task's time zone, with its daylight-saving rules
and its ``start_running`` / ``end_running`` window): by :func:`backfill` for
``manage.py sisy backfill`` and the admin, in the request's transaction, or by
a planner (:func:`compute_all`) for a request made in psql. Then
``sisy_store_backfill_v1`` queues a run for each instant that has none, or
whose row says it was not run (missed, skipped, cancelled), and leaves alone
those that ran or will: the unique (task, instant) makes a backfill asked
twice run each instant once. A task's backfill runs then run one at a time,
oldest first (docs/backfill.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

from . import conf, schedule, sql_files, when
from .vocabulary import Refusal, invalid_parameter

logger = logging.getLogger(__name__)

_ONE_MICROSECOND = dt.timedelta(microseconds=1)


class BackfillError(ValueError):
    """A backfill that cannot be done: nothing was recorded."""


class BackfillRefused(BackfillError):
    """The task may not be backfilled now (paused, finished or broken): ``refusal`` says why."""

    def __init__(self, label: str, refusal: Refusal) -> None:
        self.refusal = refusal
        super().__init__(f"{label} cannot be backfilled: it is {refusal.label}")


@dataclasses.dataclass(frozen=True)
class Backfill:
    """What a backfill did: its instants, the runs it queued, those that had run already."""

    backfill_id: int
    task_id: int
    label: str
    range_from: dt.datetime
    range_to: dt.datetime  # no later than when it was asked
    instants: int  # of the schedule in the range
    queued: int  # runs queued (their instants had no run, or were not run)
    already: int  # instants that had run, or were to run, already

    def describe(self) -> str:
        """One line for the command and the admin."""
        span = " to ".join(
            moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
            for moment in (self.range_from, self.range_to)
        )
        if not self.instants:
            return f"{self.label}: no instant of its schedule from {span}; nothing to run."
        already = f", {self.already} had run or will run already" if self.already else ""
        return (
            f"{self.label}: {self.queued} of {self.instants} instant(s) from {span} queued"
            f"{already}; they run one at a time, oldest first."
        )


def limit_of(asked: int | None) -> int:
    """The most instants a backfill may run: ``asked``, within SISY_BACKFILL_LIMIT."""
    cap = int(conf.settings.BACKFILL_LIMIT)
    return cap if asked is None else max(1, min(int(asked), cap))


def instants_between(
    expression: str,
    timezone: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    limit: int,
    start_running: dt.datetime | None = None,
    end_running: dt.datetime | None = None,
) -> list[dt.datetime]:
    """The instants of the schedule from ``start`` through ``end``, oldest first.

    Within the task's window too (``start_running``, ``end_running``), as the
    planner plans them. Raises BackfillError when there are more than
    ``limit``, and ScheduleError for a schedule that cannot be planned.
    """
    low = start if start_running is None else max(start, start_running)
    high = end if end_running is None else min(end, end_running)
    instants: list[dt.datetime] = []
    instant = low - _ONE_MICROSECOND
    while True:
        instant = schedule.next_after(expression, timezone, instant)
        if instant > high:
            return instants
        if len(instants) == limit:
            raise BackfillError(
                f"the range holds more than {limit} instant(s) of {expression!r}, the most one "
                "backfill may run (SISY_BACKFILL_LIMIT, or the limit asked): backfill a "
                "shorter range"
            )
        instants.append(instant)


def _compute(row: dict[str, Any]) -> tuple[list[dt.datetime], str]:
    """A pending request's instants, or why none can be run (then empty)."""
    try:
        return (
            instants_between(
                row["schedule"],
                row["timezone"],
                row["range_from"],
                row["range_to"],
                limit=limit_of(row["max_instants"]),
                start_running=row["start_running"],
                end_running=row["end_running"],
            ),
            "",
        )
    except (BackfillError, schedule.ScheduleError) as exc:
        return [], str(exc)


def compute_all(rows: Iterable[dict[str, Any]]) -> list[tuple[list[dt.datetime], str]]:
    """The instants of each backfill a planner found pending (``pending_backfills``)."""
    return [_compute(row) for row in rows]


def log_stored(backfill_id: int, task_id: int, stored: dict[str, Any]) -> None:
    """Say what a planner made of a backfill asked in SQL."""
    extra = {"action": "backfill_stored", "backfill_id": backfill_id, "task_id": task_id}
    if stored["error"]:
        logger.warning(
            f"Backfill {backfill_id} of task {task_id} runs nothing: {stored['error']}",
            extra={**extra, "error": stored["error"]},
        )
    else:
        logger.info(
            f"Backfill {backfill_id} of task {task_id}: {stored['queued']} of "
            f"{stored['instants']} instant(s) queued, {stored['already']} had run already",
            extra={**extra, "queued": stored["queued"], "already": stored["already"]},
        )


def backfill(
    task_id: int,
    start: dt.datetime,
    end: dt.datetime,
    *,
    limit: int | None = None,
    using: str | None = None,
) -> Backfill:
    """Run each past instant of task ``task_id``'s schedule from ``start`` through ``end``, once.

    ``end`` is at most now, on the database's clock. ``limit``: the most
    instants this backfill may run (SISY_BACKFILL_LIMIT caps it). Raises
    BackfillRefused for a task paused, finished or broken, BackfillError for
    a range of more instants than the limit (nothing is recorded), and
    LookupError for an unknown task. The runs are queued when this returns;
    workers run them, one at a time, oldest first.
    """
    from .runner import RUN_TASK_NAME  # the runner imports Django's ORM at import time

    using = using or DEFAULT_DB_ALIAS
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        try:
            with transaction.atomic(using=using):
                cursor.execute(
                    "SELECT backfill_id, label, refusal "
                    "FROM sisy_request_backfill_v1(%s, %s, %s, %s)",
                    [task_id, start, end, limit],
                )
        except DatabaseError as exc:
            # A range reversed or to come, a limit below 1: the database's rule, said plainly.
            message = invalid_parameter(exc)
            if message is None:
                raise
            raise BackfillError(message) from None
        row = cursor.fetchone()
        if row is None:
            raise LookupError(f"no task with id {task_id}")
        backfill_id, label, refusal = row
        if refusal is not None:
            raise BackfillRefused(label, Refusal(refusal))
        cursor.execute(sql_files.queries()["backfill_request"], {"backfill_id": backfill_id})
        columns = [column.name for column in cursor.description]
        request = dict(zip(columns, cursor.fetchone(), strict=True))
        instants, error = _compute(request)
        if error:
            raise BackfillError(error)
        cursor.execute(
            sql_files.queries()["store_backfill"],
            {
                "backfill_id": backfill_id,
                "instants": instants,
                "error": "",
                "queue": conf.settings.QUEUE,
                "task_name": RUN_TASK_NAME,
            },
        )
        count, queued, already, error = cursor.fetchone()
        if error:  # refused meanwhile (paused, finished or broken): nothing is kept
            raise BackfillError(f"{label} cannot be backfilled: {error}")
    done = Backfill(
        backfill_id=backfill_id,
        task_id=task_id,
        label=label,
        range_from=request["range_from"],
        range_to=request["range_to"],
        instants=count,
        queued=queued,
        already=already,
    )
    logger.info(
        done.describe(),
        extra={
            "action": "backfill",
            "backfill_id": backfill_id,
            "task_id": task_id,
            "queued": queued,
            "already": already,
        },
    )
    return done


def parse_when(text: str, zone: dt.tzinfo, now: dt.datetime) -> dt.datetime:
    """A past instant as an operator types it: ISO 8601, ``now``, or a time ago (``5m``).

    A date and time without an offset is in ``zone`` (the task's time zone);
    a time ago counts back from ``now`` (the database's clock) in seconds (s),
    minutes (m), hours (h), days (d) or weeks (w): ``90s``, ``2h ago``,
    ``1d12h`` (``-5m`` too, written ``--from=-5m`` on a command line).
    """
    value = text.strip()
    if value.lower() == "now":
        return now
    ago = when.duration(re.sub(r"\s*ago$", "", value.removeprefix("-"), flags=re.IGNORECASE))
    if ago is not None:
        return now - ago
    past = when.instant(value, zone)
    if past is None:
        raise ValueError(
            f"{text!r} is not an instant: write ISO 8601 (2026-12-02T03:00:00, in the task's "
            "time zone unless it has an offset), 'now', or a time ago such as 5m or 2h"
        )
    return past
