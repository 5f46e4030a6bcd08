"""Helpers several tiers share: waiting, the test database's URL, documents and options to check."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TypeVar

from devtools.embedded_pg import with_database

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it is truthy; return its value, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def current_database_url() -> str:
    """The URL of the database the tests' Django connection uses: the test database."""
    from django.db import connection

    return with_database(os.environ["DATABASE_URL"], connection.settings_dict["NAME"])


def nested(depth: int) -> dict:
    """An object nested ``depth`` levels (``{}`` is 1), built without recursion."""
    inner: object = []
    for _ in range(depth - 2):
        inner = [inner]
    return {"x": inner} if depth > 1 else {}


VALID_OPTIONS = [
    *(("missed", value) for value in ("coalesce", "skip", "all", None)),
    *(("overlap", value) for value in ("allow", "skip", "buffer_one", None)),
    *(("grace", value) for value in (0, 0.0, 0.5, 60, 86400 * 365, None)),
    *(("timeout", value) for value in (0.001, 1, 3600.5, None)),
    *(("retries", value) for value in (0, 1, 3, 3.0, 100, None)),
    *(("retry_delay", value) for value in (0.001, 10, 2.5, None)),
    *(("priority", value) for value in (-100, -1, 0, 5, 5.0, 100, None)),
    *(("jitter", value) for value in (0, 0.5, 2, 86400, None)),
    *(("queue", value) for value in ("heavy", "reports.eu-1", "a:b_c", "q" * 40, None)),
]


INVALID_OPTIONS = [
    *(("missed", value) for value in ("Coalesce", "", "none", 1, True, ["all"])),
    *(("overlap", value) for value in ("forbid", "", False, True, 0)),
    *(
        ("grace", value)
        for value in (-1, -0.001, "60", True, False, math.nan, math.inf, -math.inf, [], {})
    ),
    *(("timeout", value) for value in (0, 0.0, -5, "10", True, math.nan, math.inf)),
    *(
        ("retries", value)
        for value in (-1, 101, 2.5, 1e9, "3", True, False, math.nan, math.inf, [3])
    ),
    *(("retry_delay", value) for value in (0, -1, "1", False, math.nan, math.inf)),
    *(("priority", value) for value in (-101, 101, 0.5, 1e9, "5", True, math.nan, [1])),
    *(("jitter", value) for value in (-1, 86401, "2", True, math.nan, math.inf, [2])),
    *(("queue", value) for value in ("", "q" * 41, "two words", "é", 3, True, ["heavy"])),
]
