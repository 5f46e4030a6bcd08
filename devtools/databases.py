"""Throwaway databases on a PostgreSQL server, for the tests, the benchmarks and the soak.

Each database gets a fresh name (``prefix`` and random hex), so that runs sharing
a server never meet; :func:`drop_database` uses ``WITH (FORCE)`` so that
connections a test or a killed worker left open do not keep it alive.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql as pg_sql
from psycopg.conninfo import conninfo_to_dict

from devtools.embedded_pg import with_database

# Every PostgreSQL has it; DROP DATABASE must run from another database than its target.
MAINTENANCE_DATABASE = "postgres"


def create_database(server_url: str, prefix: str) -> str:
    """Create a new, empty database on the server of ``server_url``; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(pg_sql.SQL("CREATE DATABASE {}").format(pg_sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(url: str) -> None:
    """Drop the database of ``url`` if it exists, disconnecting its sessions."""
    name = str(conninfo_to_dict(url)["dbname"])
    with psycopg.connect(with_database(url, MAINTENANCE_DATABASE), autocommit=True) as admin:
        admin.execute(
            pg_sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pg_sql.Identifier(name))
        )


@contextlib.contextmanager
def empty_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url`` (its URL), dropped afterwards."""
    url = create_database(server_url, prefix)
    try:
        yield url
    finally:
        drop_database(url)


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]] | None:
    """Run ``sql`` in its own autocommit session on database ``url``; its rows, if any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else None
