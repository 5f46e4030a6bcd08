"""A throwaway PostgreSQL for the demo, the tests and the benchmarks.

``DATABASE_URL`` wins when set. Otherwise the first process to ask starts a
private server with the ``pgserver`` wheel (PostgreSQL with its own binaries,
usable as root), exports ``DATABASE_URL`` so that child processes such as
workers connect to the same server, and deletes it when that process exits.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from psycopg.conninfo import conninfo_to_dict


def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    # pgserver (through platformdirs) wants a private runtime directory.
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="sisy-pg-run-"))
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="sisy-pg-")
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    url = server.get_uri()
    os.environ["DATABASE_URL"] = url
    return url


def django_database(url: str, **extra: Any) -> dict[str, Any]:
    """Django's DATABASES entry for a libpq URL or conninfo string."""
    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
        **extra,
    }


def with_database(url: str, dbname: str) -> str:
    """The same server as ``url``, another database (for worker processes in tests)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=dbname)
