"""Cron and time-zone arithmetic: which instant a task fires next.

Pure functions, no database: the planner feeds them a task's planning columns
and writes the answer back to ``sisy_task.next_run``.

Schedules use Sisy's documented croniter syntax: five fields
(``minute hour day-of-month month day-of-week``) and an optional sixth field
for seconds. They are read in the task's own time zone, so ``'30 0 * * *'``
means 00:30 local time, all year round.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo
from functools import lru_cache

from croniter import CroniterBadDateError, CroniterError, croniter

_ONE_MICROSECOND = dt.timedelta(microseconds=1)
# Longest gap between two instants of a cron expression that fires at all:
# 29 February, 2096 to 2104 (1900, 2100, 2200 are not leap years).
_MAX_YEARS_BETWEEN_MATCHES = 9


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be planned."""


def validate_schedule(expression: str) -> str:
    """Return ``expression`` normalised (blanks collapsed), or raise ScheduleError."""
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule must be a cron string, not {type(expression).__name__}")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"schedule {expression!r} has {len(fields)} field(s); expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 (the sixth is seconds)"
        )
    normalised = " ".join(fields)
    try:
        croniter(normalised)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"schedule {expression!r} is not valid cron: {exc}") from exc
    if not _has_an_instant(normalised):
        raise ScheduleError(
            f"schedule {expression!r} has no instant: no date matches its day-of-month "
            "and month fields (e.g. 31 February), so the task would never run"
        )
    return normalised


@lru_cache(maxsize=1024)
def _has_an_instant(expression: str) -> bool:
    """Whether a valid cron expression ever fires (``'0 0 31 2 *'`` never does).

    Cron fields have no year, so an expression that fires at all fires within
    any eight consecutive years (29 February, across a century that skips a
    leap year). croniter stops looking after ``max_years_between_matches``
    years and raises CroniterBadDateError: a bounded search, never a hang.
    The answer does not depend on the start, hence the cache (the planner
    validates the schedule of every task it plans).
    """
    start = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    try:
        croniter(expression, start, max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES).get_next(
            dt.datetime
        )
    except CroniterBadDateError:
        return False
    return True


@lru_cache(maxsize=512)
def get_timezone(name: str) -> zoneinfo.ZoneInfo:
    """Return the IANA zone ``name``, or raise ScheduleError."""
    if not isinstance(name, str) or not name:
        raise ScheduleError("timezone must be an IANA time zone name such as 'Europe/Paris'")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r}") from exc


def _is_repeated_wall_time(instant: dt.datetime) -> bool:
    """True for the second occurrence of a local time (the hour DST gives back)."""
    return bool(instant.fold) and (instant.replace(fold=0).utcoffset() != instant.utcoffset())


def next_after(expression: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """First instant of ``expression`` strictly after ``after``, in UTC.

    When clocks go back, a fixed-hour schedule (``'30 2 * * *'``) fires once, at
    the first 02:30, as cron does; schedules with a wildcard hour field keep
    firing through the repeated hour because they are intervals, not times of day.
    When clocks go forward, a time that does not exist fires at the first
    instant after the gap (croniter's rule).
    """
    if after.tzinfo is None:
        raise ValueError("next_after() needs an aware datetime")
    expression = validate_schedule(expression)
    zone = get_timezone(timezone)
    hour_field = expression.split()[1]
    fixed_hour = not hour_field.startswith("*")
    iterator = croniter(expression, after.astimezone(zone))
    while True:
        candidate: dt.datetime = iterator.get_next(dt.datetime).astimezone(zone)
        if fixed_hour and _is_repeated_wall_time(candidate):
            continue
        return candidate.astimezone(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class PlanInput:
    """The columns of ``sisy_task`` that decide when it fires."""

    schedule: str
    timezone: str
    start_running: dt.datetime | None = None
    end_running: dt.datetime | None = None
    iterations: int = 0
    fire_count: int = 0
    wait_for_schedule: bool = True


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the planner writes back: the next instant, or the end of the task."""

    next_run: dt.datetime | None
    finished: bool = False
    skipped_instants: bool = False


def _exhausted(task: PlanInput) -> bool:
    return bool(task.iterations) and task.fire_count >= task.iterations


def _bounded(task: PlanInput, candidate: dt.datetime, skipped: bool = False) -> Plan:
    if task.end_running is not None and candidate > task.end_running:
        return Plan(next_run=None, finished=True, skipped_instants=skipped)
    return Plan(next_run=candidate, skipped_instants=skipped)


def plan_from_now(task: PlanInput, now: dt.datetime) -> Plan:
    """Plan a task that is new or whose definition just changed.

    Instants of the (new) schedule that are already past are not caught up.
    A task that has never fired and does not wait for its schedule fires at
    once (or at ``start_running`` if that is later), as in Sisy.
    """
    if _exhausted(task):
        return Plan(next_run=None, finished=True)
    earliest = now if task.start_running is None else max(now, task.start_running)
    if task.fire_count == 0 and not task.wait_for_schedule:
        return _bounded(task, earliest)
    return _bounded(task, next_after(task.schedule, task.timezone, earliest - _ONE_MICROSECOND))


def plan_after_fire(
    task: PlanInput,
    fired_for: dt.datetime,
    now: dt.datetime,
    catchup_window: dt.timedelta,
) -> Plan:
    """Plan the instant that follows ``fired_for``, the instant just fired.

    Following the schedule from the fired instant (not from the clock) means a
    planner that wakes a little late never skips an instant. Instants later
    than ``catchup_window`` are skipped rather than run in a burst.
    """
    if _exhausted(task):
        return Plan(next_run=None, finished=True)
    candidate = next_after(task.schedule, task.timezone, fired_for)
    skipped = candidate < now - catchup_window
    if skipped:
        candidate = next_after(task.schedule, task.timezone, now)
    return _bounded(task, candidate, skipped)
