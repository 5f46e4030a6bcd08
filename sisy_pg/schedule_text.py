"""Schedules put for people: in words, with a warning and their next instants.

Shared by ``manage.py sisy check`` and the admin's schedule preview, so that a
terminal and a browser say the same thing about one expression.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from . import schedule


# cron-descriptor reads a 6-field expression as seconds-first (Quartz); sisy's
# sixth field is seconds. Its 24-hour clock and Sunday-is-0 match croniter's.
@lru_cache(maxsize=1024)
def describe(expression: str) -> str:
    """``expression`` (valid, sisy's field order) in plain English, as cron-descriptor puts it."""
    from cron_descriptor import Options, get_description

    fields = expression.split()
    if len(fields) == 6:
        fields = fields[5:] + fields[:5]
    options = Options()
    options.use_24hour_time_format = True
    try:
        return str(get_description(" ".join(fields), options))
    except Exception as exc:  # its parser is stricter than croniter on some syntax
        return f"(no description: {exc})"


def seconds_first_suggestion(expression: str) -> str | None:
    """The sisy spelling of ``expression`` if it looks seconds-first (Quartz, Spring), or None.

    The heuristic: six fields, the sixth ``*`` (every second, rarely meant)
    and the first not ``*``. Read seconds-first, ``0 */5 * * * *`` is every
    five minutes; read as sisy does, it is every second of minute 0 of every
    fifth hour. The suggestion moves the first field to the end.
    """
    fields = expression.split()
    if len(fields) != 6 or fields[5] != "*" or fields[0] == "*":
        return None
    return " ".join(fields[1:] + fields[:1])


def seconds_first_warning(expression: str) -> str | None:
    """What to tell whoever typed a seconds-first ``expression`` (normalised), or None."""
    suggestion = seconds_first_suggestion(expression)
    if suggestion is None:
        return None
    return (
        f"sisy's sixth field is seconds: {expression!r} fires every second of the "
        f"minutes it names. Did you mean {suggestion!r} (seconds moved last)?"
    )


def instants_of(
    expression: str, zone_name: str, after: dt.datetime, count: int
) -> list[dt.datetime]:
    """The next ``count`` instants of ``expression`` in ``zone_name`` after ``after``."""
    instants: list[dt.datetime] = []
    for _ in range(count):
        after = schedule.next_after(expression, zone_name, after)
        instants.append(after)
    return instants
