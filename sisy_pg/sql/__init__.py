"""The SQL of sisy-pg, shipped as package data and read by migrations and the store."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_QUERY_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)


def read(name: str) -> str:
    """Return the text of ``sisy_pg/sql/<name>``."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@cache
def queries() -> dict[str, str]:
    """Parse queries.sql into {name: query}."""
    text = read("queries.sql")
    parts = _QUERY_HEADER.split(text)[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=False)}
