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
import math
import re
import threading
import zoneinfo
from functools import lru_cache

from croniter import CroniterBadDateError, croniter

_ONE_MICROSECOND = dt.timedelta(microseconds=1)
_ONE_SECOND = dt.timedelta(seconds=1)
# How far ahead to look for clocks going back. Vixie cron treats a larger change
# as a clock correction; Antarctica/Troll's 2 hours is the largest DST shift.
_MAX_SHIFT = dt.timedelta(hours=3)
# Longest gap between two instants of a cron expression that fires at all:
# the fifth Monday of February (``0 0 * 2 1#5``), 2072 to 2112 (a February
# with five Mondays is a leap one that starts on a Monday).
_MAX_YEARS_BETWEEN_MATCHES = 40
# The Gregorian calendar repeats every 400 years: an expression that does not
# fire within 400 years never does.
_CALENDAR_CYCLE_YEARS = 400

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
# The documented syntax (docs/schedules.md#syntax), item by item (a field is
# a comma-separated list of items): *, */n, a, a-b, a-b/n; names (jan, mon)
# in the month and day-of-week fields; l (the last day) in day-of-month;
# d#n (the n-th weekday d of the month) in day-of-week. croniter reads more
# (R, H, ?, W, L in day-of-week, a/n, ...): refused, so that a schedule
# means one thing to every process and to the documentation.
_NUMBERS = r"\*(?:/\d+)?|\d+(?:-\d+(?:/\d+)?)?"
_NAMES = r"\*(?:/\d+)?|(?:\d+|[a-z]{3})(?:-(?:\d+|[a-z]{3})(?:/\d+)?)?"
_ITEMS = tuple(
    re.compile(f"(?:{pattern})", re.ASCII | re.IGNORECASE)
    for pattern in (
        _NUMBERS,
        _NUMBERS,
        _NUMBERS + "|l",
        _NAMES,
        _NAMES + r"|(?:\d+|[a-z]{3})#\d+",
        _NUMBERS,
    )
)


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be planned."""


def validate_schedule(expression: str) -> str:
    """Return ``expression`` normalised (blanks collapsed), or raise ScheduleError."""
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule must be a cron string, not {type(expression).__name__}")
    return _validated(expression)


@lru_cache(maxsize=4096)
def _validated(expression: str) -> str:
    """validate_schedule for a string: parsing is the costly part of the planner's arithmetic."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"schedule {expression!r} has {len(fields)} field(s); expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 (the sixth is seconds)"
        )
    normalised = " ".join(fields)
    for index, field in enumerate(fields):
        for item in field.split(","):
            if not _ITEMS[index].fullmatch(item):
                raise ScheduleError(
                    f"schedule {expression!r} is not valid cron: {item!r} in the "
                    f"{_FIELDS[index]} field is {_not_supported(item)} (see the syntax in "
                    "docs/schedules.md)"
                )
    if "#" in fields[4] and fields[2] != "*":
        raise ScheduleError(
            f"schedule {expression!r} is not valid cron: a day-of-week with # "
            f"({fields[4]}) needs * as day-of-month. croniter does not combine the two "
            "(it fires on the # days alone, or never when none of them is ever one of the "
            f"days of the month named): write {' '.join([*fields[:2], '*', *fields[3:]])!r}"
        )
    try:
        croniter(normalised)
    except (ValueError, KeyError) as exc:  # CroniterError is a ValueError (not exported by 2.0)
        raise ScheduleError(f"schedule {expression!r} is not valid cron: {exc}") from exc
    if not _has_an_instant(normalised):
        raise ScheduleError(
            f"schedule {expression!r} has no instant: no date matches its day-of-month "
            "and month fields (e.g. 31 February), so the task would never run"
        )
    return normalised


def _not_supported(item: str) -> str:
    """What an item outside the documented syntax is, for the message that refuses it."""
    shapes = (
        (
            r"r(\(\d+-\d+\))?(/\d+)?",
            "croniter's R (random), not supported: each process draws its own value",
        ),
        (r"h(\(\d+-\d+\))?(/\d+)?", "croniter's H (hashed), not supported"),
        (r".*\?.*", "Quartz's ?, not supported: write *"),
        (r"\d+w|w\d+|lw", "a nearest weekday (W), not supported"),
        (
            r"l\d*|\d+l|.+-l(/\d+)?",
            "an L form, not supported: l alone, in day-of-month, is the last day of the month",
        ),
        (r"[^-*/]+/\d+", "a step without a range, not supported: write */n or a-b/n"),
    )
    for shape, what in shapes:
        if re.fullmatch(shape, item, re.ASCII | re.IGNORECASE):
            return what
    return "not cron: an item is *, */n, a, a-b or a-b/n"


@lru_cache(maxsize=1024)
def _has_an_instant(expression: str) -> bool:
    """Whether a valid cron expression ever fires (``'0 0 31 2 *'`` never does).

    Cron fields have no year and the calendar repeats every 400 years, so
    an expression that fires at all fires within 400 years of any instant
    (``0 0 * 2 1#5``, the fifth Monday of February, fires in 2016, 2044,
    2072, then 2112). croniter stops looking after ``max_years_between_matches``
    years and raises CroniterBadDateError: a bounded search, never a hang.
    The answer does not depend on the start, hence the cache (the planner
    validates the schedule of every task it plans).
    """
    start = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    try:
        croniter(expression, start, max_years_between_matches=_CALENDAR_CYCLE_YEARS).get_next(
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
    # OSError: a directory of the tz database ("Europe") or a name too long for a path.
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError(f"unknown time zone {name[:100]!r}") from exc


@lru_cache(maxsize=1024)
def _every_hour(expression: str) -> bool:
    """Whether the hour field covers all 24 hours (``*``, ``*/1``, ``0-23``).

    Such a schedule is an interval read on the clock; any other hour field
    names times of day. The two differ only across a daylight-saving change.
    """
    hours = croniter(expression).expanded[1]
    return hours == ["*"] or set(hours) == set(range(24))


def _offset_at(zone: zoneinfo.ZoneInfo, seconds: int) -> dt.timedelta | None:
    return dt.datetime.fromtimestamp(seconds, tz=zone).utcoffset()


def _transition(zone: zoneinfo.ZoneInfo, before: dt.datetime, after: dt.datetime) -> dt.datetime:
    """The instant in ``(before, after]`` at which ``zone`` changes its UTC offset.

    ``before`` and ``after`` have different offsets and one change between
    them (they are at most a few hours apart). tzdata changes offsets on whole
    seconds, so a bisection on seconds finds the instant exactly.
    """
    low = math.floor(before.timestamp())
    high = math.ceil(after.timestamp())
    low_offset = _offset_at(zone, low)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, middle) == low_offset:
            low = middle
        else:
            high = middle
    return dt.datetime.fromtimestamp(high, tz=dt.timezone.utc)


def _wall_span(zone: zoneinfo.ZoneInfo, change: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The local times ``[start, end)`` that the offset change at ``change`` repeats or skips.

    Naive datetimes, like the local times croniter walks: ``[01:00, 02:00)``
    when New York's clocks go back, ``[02:00, 02:30)`` when Lord Howe's go forward.
    """
    before = (change - _ONE_SECOND).astimezone(zone) + _ONE_SECOND  # wall-clock arithmetic
    after = change.astimezone(zone)
    walls = sorted((before.replace(tzinfo=None), after.replace(tzinfo=None)))
    return walls[0], walls[1]


_iterators = threading.local()


def _iterator(expression: str, start: dt.datetime) -> croniter:
    """A croniter for ``expression`` set to ``start``, parsed once per thread.

    Parsing the expression costs more than finding the next match: the
    planner reuses one iterator per expression (each thread its own: they
    are stateful).
    """
    cache: dict[str, croniter] | None = getattr(_iterators, "cache", None)
    if cache is None:
        cache = _iterators.cache = {}
    iterator = cache.get(expression)
    if iterator is None:
        if len(cache) >= 4096:
            cache.clear()
        iterator = cache[expression] = croniter(
            expression, start, max_years_between_matches=_MAX_YEARS_BETWEEN_MATCHES
        )
    else:
        iterator.set_current(start, force=True)
    return iterator


def _next_local(expression: str, after: dt.datetime) -> dt.datetime:
    """First local time (naive) matching ``expression`` strictly after ``after`` (naive)."""
    iterator = _iterator(expression, after)
    while True:
        local: dt.datetime = iterator.get_next(dt.datetime)
        if local > after:
            return local


def _occurrences(local: dt.datetime, zone: zoneinfo.ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants of a naive local time read with ``fold=0`` and ``fold=1``.

    Equal for a time that happens once; ``first < second`` for a time that
    happens twice; ``first > second`` for a time that does not exist (PEP 495).
    """
    first = local.replace(tzinfo=zone, fold=0).astimezone(dt.timezone.utc)
    second = local.replace(tzinfo=zone, fold=1).astimezone(dt.timezone.utc)
    return first, second


def _is_repeated_wall_time(instant: dt.datetime) -> bool:
    """True for the second occurrence of a local time (the hour DST gives back)."""
    return bool(instant.fold) and (instant.replace(fold=0).utcoffset() != instant.utcoffset())


def next_after(expression: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """First instant of ``expression`` strictly after ``after``, in UTC.

    The schedule is matched against the local time in ``timezone``. Across a
    change of UTC offset (daylight saving) the rule is:

    - A schedule whose hour field covers every hour (``'*/15 * * * *'``,
      ``'0 * * * *'``, ``'* * * * * */10'``) is an interval read on the clock.
      It fires at every real instant whose local time matches: on both passes
      of a repeated hour (clocks going back), and not at all for local times
      that clocks going forward skip, since no instant shows them. So
      ``'*/15 * * * *'`` stays 15 minutes apart in elapsed time through both.
    - Any other hour field names times of day (``'30 1 * * *'``,
      ``'*/15 2 * * *'``). A time that happens twice fires once, at its first
      occurrence; times that do not exist fire once, together, at the first
      instant after the gap (02:30 on Berlin's spring-forward day fires at
      03:00 CEST).

    croniter only walks naive local times; turning them into instants is done
    here with ``zoneinfo``, so the answer does not depend on the croniter
    version's own time-zone handling. Offset changes are assumed to be more
    than three hours apart, as every daylight-saving rule in tzdata is.
    """
    if after.tzinfo is None:
        raise ValueError("next_after() needs an aware datetime")
    expression = validate_schedule(expression)
    zone = get_timezone(timezone)
    every_hour = _every_hour(expression)
    after = after.astimezone(dt.timezone.utc)
    local_after = after.astimezone(zone)
    wall = local_after.replace(tzinfo=None)

    # 1. Local times after ``wall``, each at its first occurrence: these come
    # in the same order in local and in real time.
    search_from = wall
    repeated: tuple[dt.datetime, dt.datetime] | None = None
    if _is_repeated_wall_time(local_after):
        # ``after`` is on the second pass of a repeated hour: the first
        # occurrences of the rest of that hour are past.
        repeated = _wall_span(zone, _transition(zone, local_after.replace(fold=0), after))
        search_from = max(wall, repeated[1] - _ONE_MICROSECOND)
    while True:
        local = _next_local(expression, search_from)
        first, second = _occurrences(local, zone)
        if first <= second:
            break  # the local time exists
        change = _transition(zone, second, first)  # it is in a gap: clocks went forward
        if not every_hour:
            return change  # a time of day fires at the first instant after the gap
        search_from = _wall_span(zone, change)[1] - _ONE_MICROSECOND
    if not every_hour:
        return first  # a time of day fires at its first occurrence only

    # 2. An interval also fires on the second pass of a repeated hour: the one
    # ``after`` is in, or one that begins before ``first``.
    if repeated is None:
        horizon = min(first, after + _MAX_SHIFT)
        before_offset = local_after.utcoffset()
        horizon_offset = horizon.astimezone(zone).utcoffset()
        if before_offset is None or horizon_offset is None or horizon_offset >= before_offset:
            return first
        repeated = _wall_span(zone, _transition(zone, after, horizon))
        search_from = repeated[0] - _ONE_MICROSECOND
    else:
        search_from = wall
    local = _next_local(expression, search_from)
    if local < repeated[1]:
        second = _occurrences(local, zone)[1]
        if after < second < first:
            return second
    return first


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


def _exhausted(task: PlanInput) -> bool:
    return bool(task.iterations) and task.fire_count >= task.iterations


def _bounded(task: PlanInput, candidate: dt.datetime) -> Plan:
    if task.end_running is not None and candidate > task.end_running:
        return Plan(next_run=None, finished=True)
    return Plan(next_run=candidate)


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


def plan_after(task: PlanInput, instant: dt.datetime) -> Plan:
    """Plan the instant that follows ``instant``, one the planner just dealt with.

    Following the schedule from that instant (not from the clock) means a
    planner that wakes a little late never skips an instant: instants that
    are past by then are the policies' business (see policies.py).
    """
    if _exhausted(task):
        return Plan(next_run=None, finished=True)
    return _bounded(task, next_after(task.schedule, task.timezone, instant))


# Windows looked back through for the latest instant before a time: from a
# second (every-second schedules) to the longest gap between two instants.
_LOOK_BACK = (
    dt.timedelta(seconds=1),
    dt.timedelta(minutes=1),
    dt.timedelta(hours=1),
    dt.timedelta(days=1),
    dt.timedelta(days=32),
    dt.timedelta(days=366),
    dt.timedelta(days=366 * _MAX_YEARS_BETWEEN_MATCHES),
)


def last_before(
    expression: str, timezone: str, before: dt.datetime, not_before: dt.datetime
) -> dt.datetime | None:
    """Latest instant of ``expression`` in ``[not_before, before)``, or None.

    Found by bisection on ``next_after`` (which only looks forward), so the
    cost does not grow with the number of instants in between: an outage of
    a week on an every-second schedule costs a few dozen steps.
    """
    if before <= not_before:
        return None
    for window in _LOOK_BACK:
        low = max(before - window, not_before)
        if next_after(expression, timezone, low - _ONE_MICROSECOND) < before:
            break
        if low == not_before:
            return None
    else:
        return None
    # An instant lies in [low, before), none in [high, before).
    high = before
    while high - low > _ONE_SECOND:
        middle = low + (high - low) / 2
        if next_after(expression, timezone, middle - _ONE_MICROSECOND) < before:
            low = middle
        else:
            high = middle
    last = next_after(expression, timezone, low - _ONE_MICROSECOND)
    while (following := next_after(expression, timezone, last)) < before:
        last = following
    return last
