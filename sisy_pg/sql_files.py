"""sisy-pg's SQL files: migrations, the current schema, the named queries, the role recipe.

They live in the top-level ``sql/`` folder of the source tree; the wheel
carries the same folder as ``sisy_pg/sql/`` (see pyproject.toml). Either way
the files are found here, so a source checkout, an editable install and an
installed wheel all read the same SQL.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_QUERY_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)


@cache
def directory() -> Path:
    """The folder holding migrations/, schema.sql, queries.sql and roles.sql."""
    for candidate in (_PACKAGE / "sql", _PACKAGE.parent / "sql"):
        if (candidate / "schema.sql").is_file():
            return candidate
    raise FileNotFoundError(
        f"sisy-pg's SQL files are missing: neither {_PACKAGE / 'sql'} (an installed wheel) "
        f"nor {_PACKAGE.parent / 'sql'} (a source checkout) holds schema.sql"
    )


def read(relative_path: str) -> str:
    return (directory() / relative_path).read_text(encoding="utf-8")


def migration(name: str) -> str:
    """The forward SQL of migration ``name`` (e.g. ``0001_initial``)."""
    return read(f"migrations/{name}.sql")


def reverse_migration(name: str) -> str:
    """The SQL that undoes migration ``name``."""
    return read(f"migrations/{name}.reverse.sql")


def migration_names() -> list[str]:
    """Every migration file, in the order they apply."""
    return sorted(
        path.name.removesuffix(".sql")
        for path in (directory() / "migrations").glob("*.sql")
        if not path.name.endswith(".reverse.sql")
    )


@cache
def queries() -> dict[str, str]:
    """The named queries of queries.sql, as {name: query}."""
    parts = _QUERY_HEADER.split(read("queries.sql"))[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=True)}


def roles() -> str:
    """The role recipe: a psql script that makes the worker, operator and monitor roles."""
    return read("roles.sql")
