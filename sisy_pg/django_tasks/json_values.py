"""Values a Django task's job and result keep: JSON as Django normalises it, that jsonb takes."""

from __future__ import annotations

import json
import math
from typing import Any

from .. import tasks_framework


def normalized(value: Any, what: str) -> Any:
    """``value`` as Django's ``normalize_json`` makes it; TypeError or ValueError naming ``what``.

    Refused, beyond what ``normalize_json`` refuses: NaN and infinities (not
    JSON), keys that are not strings (JSON would make them strings: the task
    would get other arguments than it was given) and the NUL character
    (PostgreSQL's jsonb cannot store it).
    """
    try:
        value = tasks_framework.part("normalize_json")(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what} is not JSON: {exc}") from exc
    problem = _problem(value)
    if problem:
        raise ValueError(f"{what} is not JSON: {problem}")
    return value


def text(value: Any) -> str:
    """JSON text of a value :func:`normalized` accepted."""
    return json.dumps(value, allow_nan=False)


def _problem(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a JSON number"
    if isinstance(value, str):
        return "a string holds the NUL character (\\x00)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"key {key!r} is not a string"
            problem = _problem(key) or _problem(item)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _problem(item)
            if problem:
                return problem
    return None
