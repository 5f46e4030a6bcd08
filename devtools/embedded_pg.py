"""A throwaway PostgreSQL for the demo, the tests and the benchmarks.

``DATABASE_URL`` wins when set. Otherwise the first process to ask starts a
private server and exports ``DATABASE_URL``, so that its child processes (the
workers) connect to the same server; the server, its data directory and its
socket directory are deleted when that process exits, including on Ctrl-C,
SIGTERM and SIGHUP (see :mod:`devtools.processes`).

The PostgreSQL binaries are, in this order:

1. ``SISY_PG_BINDIR`` (e.g. ``/usr/lib/postgresql/15/bin``) when set;
2. the ``pgserver`` wheel's (a PostgreSQL 16 with its own binaries; the ``dev``
   extra installs it where it has wheels: CPython 3.9 to 3.12);
3. the machine's: the newest ``/usr/lib/postgresql/*/bin`` (Debian, Ubuntu),
   else ``pg_config --bindir``, else ``initdb`` and ``postgres`` on ``PATH``.

The server is ``initdb`` into a temporary directory and listens on a unix socket
in that directory only (no TCP port, so nothing can collide). PostgreSQL refuses
to run as root: as root it runs as the ``postgres`` user (``nobody`` if there is
none), which then owns the temporary directory.

    python -m devtools.embedded_pg          # which binaries would be used, and their version
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools import processes

# Durability is pointless for a server deleted on exit; these save disk syncs.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


# The server this process started, if any (for restart_server()).
_server: EmbeddedPostgres | None = None


def database_url() -> str:
    global _server
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    server = EmbeddedPostgres(find_bindir())
    server.start()
    _server = server
    os.environ["DATABASE_URL"] = server.url
    return server.url


def started_server() -> EmbeddedPostgres | None:
    """The throwaway server :func:`database_url` started in this process, if it did."""
    return (
        _server if _server is not None and _server.url == os.environ.get("DATABASE_URL") else None
    )


def restart_server(down_for: float = 0.0) -> None:
    """Restart the throwaway server this process started (fast shutdown, then start).

    Same data directory, same socket: clients see a PostgreSQL restart. Only
    for a server this process started; a ``DATABASE_URL`` of yours is never
    touched (``RuntimeError``).
    """
    server = started_server()
    if server is None:
        raise RuntimeError("restart_server(): DATABASE_URL is not a server this process started")
    server.restart(down_for=down_for)


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
    return make_conninfo(url, dbname=dbname)


# --- finding the binaries ----------------------------------------------------------------


def _has_server(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "postgres").is_file()


def _major(bindir: Path) -> tuple[int, ...]:
    match = re.search(r"postgresql/(\d+(?:\.\d+)?)/", f"{bindir}/")
    return tuple(int(part) for part in match.group(1).split(".")) if match else (0,)


def pgserver_bindir() -> Path | None:
    """The ``pgserver`` wheel's binaries, found without importing it (its import has side effects)."""
    from importlib.util import find_spec

    spec = find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if _has_server(bindir) else None


def system_bindir() -> Path | None:
    """The machine's newest PostgreSQL server binaries, if any."""
    candidates = [Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin")]
    candidates = sorted((c for c in candidates if _has_server(c)), key=_major, reverse=True)
    if candidates:
        return candidates[0]
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0 and _has_server(Path(result.stdout.strip())):
            return Path(result.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb and _has_server(Path(initdb).parent):
        return Path(initdb).parent
    return None


def find_bindir() -> Path:
    explicit = os.environ.get("SISY_PG_BINDIR")
    if explicit:
        if not _has_server(Path(explicit)):
            raise RuntimeError(f"SISY_PG_BINDIR={explicit} has no initdb and postgres")
        return Path(explicit)
    bindir = pgserver_bindir() or system_bindir()
    if bindir is None:
        raise RuntimeError(
            "No PostgreSQL to start: install the `pgserver` wheel (CPython 3.9 to 3.12; the dev "
            "extra does), or your distribution's PostgreSQL server (Debian: apt-get install "
            "postgresql), or point SISY_PG_BINDIR at a PostgreSQL bin directory, or set "
            "DATABASE_URL to a server of yours."
        )
    return bindir


# --- the server --------------------------------------------------------------------------


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when this process is root, else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError(
        "running as root and there is no `postgres` or `nobody` user to run PostgreSQL as"
    )


def _make_traversable(path: Path) -> None:
    """As root, let the PostgreSQL user read ``path`` (the binaries) and traverse its parents.

    (What the pgserver wheel itself does as root; files a wheel installs are
    normally world-readable already, and then nothing changes.)
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)


class EmbeddedPostgres:
    """initdb into a temporary directory, a postmaster on a unix socket there; all deleted on exit."""

    def __init__(self, bindir: Path | str) -> None:
        self.bindir = Path(bindir)
        self.owner_pid = os.getpid()
        self.user = _run_as()
        base = tempfile.mkdtemp(prefix="sisy-pg-")
        if len(base) > 80:  # a unix socket path has ~107 bytes at most
            shutil.rmtree(base)
            base = tempfile.mkdtemp(prefix="sisy-pg-", dir="/tmp")
        self.base = Path(base)
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql://postgres@/postgres?host={quote(str(self.base), safe='/')}"
        atexit.register(self.stop)

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        uid, gid = self.user
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self, timeout: float = 60) -> None:
        processes.exit_on_signals()
        if self.user is not None:
            os.chown(self.base, *self.user)
            lib = self.bindir.parent / "lib"
            for path in (self.bindir, lib):
                if path.exists():
                    _make_traversable(path)
        initdb = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.data),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            cwd=self.base,
            **self._as_user(),
        )
        if initdb.returncode:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        self._spawn_postmaster()
        self._wait_ready(timeout)

    def _spawn_postmaster(self) -> None:
        settings = [
            f"--{name.replace('_', '-')}={value}" for name, value in SERVER_SETTINGS.items()
        ]
        with open(self.log_path, "ab") as log:
            self.process = processes.spawn(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-k",
                    str(self.base),
                    "-p",
                    "5432",
                    *settings,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                death_signal=signal.SIGQUIT,  # if this process dies unannounced
                stop_at_exit=False,  # stop() does it, after the workers
                **self._as_user(),
            )

    def restart(self, down_for: float = 0.0, timeout: float = 60) -> None:
        """Fast shutdown (clients are disconnected), ``down_for`` s down, start again."""
        if self.process is None:
            raise RuntimeError("the server is not running")
        processes.stop(self.process, timeout=20, signum=signal.SIGINT, whole_group=False)
        time.sleep(down_for)
        self._spawn_postmaster()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start:\n{self.log()}")
            try:
                psycopg.connect(self.url, connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL not ready within {timeout} s:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory; idempotent."""
        if os.getpid() != self.owner_pid:
            return
        if self.process is not None:
            # SIGINT is PostgreSQL's fast shutdown: disconnect clients, stop.
            processes.stop(self.process, timeout=20, signum=signal.SIGINT, whole_group=False)
        shutil.rmtree(self.base, ignore_errors=True)
        atexit.unregister(self.stop)


def main() -> int:
    bindir = find_bindir()
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    )
    print(f"{bindir}: {version.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
