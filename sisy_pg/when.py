"""What an operator types for a time: an ISO 8601 instant, or a duration such as ``1d12h``.

One grammar for every command that reads a time (``sisy pause --until``, ``sisy backfill
--from/--to``), each deciding which way from now a duration counts. Pure: the database's
now is the caller's to give.
"""

from __future__ import annotations

import datetime as dt
import re

_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+", re.ASCII | re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.ASCII | re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> dt.timedelta | None:
    """``90s``, ``30m``, ``2h 30m``, ``1d12h``, ``1w`` (seconds, minutes, hours, days, weeks);
    None for anything else."""
    if not _DURATION.fullmatch(text.strip()):
        return None
    return dt.timedelta(
        seconds=sum(
            float(number) * _UNIT_SECONDS[unit.lower()]
            for number, unit in _DURATION_PART.findall(text)
        )
    )


def instant(text: str, zone: dt.tzinfo) -> dt.datetime | None:
    """``2026-12-24 18:00`` (in ``zone`` without an offset), ``2026-12-24T17:00Z``,
    ``2026-12-24T18:00+01:00``; None for anything else."""
    try:
        parsed = dt.datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", text.strip()))
    except ValueError:
        return None
    return parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed
