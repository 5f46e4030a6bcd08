"""A throwaway PgBouncer in front of the test PostgreSQL, for the pooler tests.

Debian's ``pgbouncer`` (``apt-get install pgbouncer``; found on ``PATH`` or in
``/usr/sbin``) with a generated configuration in a temporary directory: one
wildcard database entry that sends every database name to the server of
``DATABASE_URL``, ``auth_type = trust`` with an ``auth_file`` listing its user
(enough on loopback), ``ignore_startup_parameters = extra_float_digits,options``
(psycopg and Django send them), and a free loopback port. The process, its
configuration and its log are deleted at exit, including on Ctrl-C, SIGTERM and
SIGHUP (see :mod:`devtools.processes`), and it is stopped before the server.

PgBouncer refuses to run as root: as root it runs as the owner of the server's
unix socket directory (the embedded PostgreSQL's user: its directory is mode
0700), else as ``postgres`` (``nobody`` if there is none).

    python -m devtools.pgbouncer     # which pgbouncer would be used, and its version
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools import processes

POOL_MODES = ("session", "transaction", "statement")


def find_pgbouncer() -> Path | None:
    """The ``pgbouncer`` executable: on ``PATH``, else Debian's ``/usr/sbin/pgbouncer``."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
    return Path(found) if found else None


def unavailable_reason() -> str | None:
    """Why no PgBouncer can be started here, or None when one can."""
    if find_pgbouncer() is None:
        return (
            "pgbouncer is not installed (Debian: apt-get install pgbouncer; "
            ".ci/run installs it as root)"
        )
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as(server_host: str) -> tuple[int, int] | None:
    """(uid, gid) to run PgBouncer as when this process is root, else None.

    The owner of the server's socket directory can reach the socket (the
    embedded PostgreSQL keeps it in a directory only its user may enter).
    """
    if os.geteuid() != 0:
        return None
    import pwd

    if server_host.startswith("/"):
        with contextlib.suppress(OSError):
            owner = os.stat(server_host)
            if owner.st_uid != 0:
                return owner.st_uid, owner.st_gid
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise RuntimeError(
        "running as root and there is no `postgres` or `nobody` user to run PgBouncer as"
    )


class PgBouncer:
    """A PgBouncer on 127.0.0.1 in front of the server of ``server_url``; all deleted on exit.

    ``url(dbname)`` is the libpq URL of a database through it; ``admin(command)``
    runs a command of its admin console (``SHOW POOLS``...).
    """

    def __init__(
        self,
        server_url: str,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 20,
        max_client_conn: int = 500,
        settings: dict[str, str] | None = None,
    ) -> None:
        if pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode must be one of {POOL_MODES}, not {pool_mode!r}")
        executable = find_pgbouncer()
        if executable is None:
            raise RuntimeError(unavailable_reason())
        self.executable = executable
        server = conninfo_to_dict(server_url)
        self.user = str(server.get("user") or "postgres")
        self.password = str(server.get("password") or "")
        self.server_host = str(server.get("host") or "/var/run/postgresql")
        self.server_port = str(server.get("port") or "5432")
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.settings = settings or {}
        self.owner_pid = os.getpid()
        self.run_as = _run_as(self.server_host)
        self.base = Path(tempfile.mkdtemp(prefix="sisy-pgbouncer-"))
        self.ini_path = self.base / "pgbouncer.ini"
        self.log_path = self.base / "pgbouncer.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    def url(self, dbname: str) -> str:
        """A libpq URL of database ``dbname`` through this PgBouncer."""
        params: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
        }
        if self.password:
            params["password"] = self.password
        return make_conninfo(**params)

    def _write_config(self) -> None:
        server = f"host={self.server_host} port={self.server_port} user={self.user}"
        if self.password:
            server += f" password={self.password}"
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.base / "userlist.txt"),
            "admin_users": self.user,
            "stats_users": self.user,
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.pool_size),
            "max_client_conn": str(self.max_client_conn),
            # psycopg sends both; PgBouncer refuses unknown startup parameters.
            "ignore_startup_parameters": "extra_float_digits,options",
            "logfile": str(self.log_path),
            "log_connections": "0",
            "log_disconnections": "0",
            **self.settings,
        }
        lines = ["[databases]", f"* = {server}", "", "[pgbouncer]"]
        lines += [f"{name} = {value}" for name, value in settings.items()]
        self.ini_path.write_text("\n".join(lines) + "\n")
        (self.base / "userlist.txt").write_text(f'"{self.user}" "{self.password}"\n')
        if self.run_as is not None:
            for path in (self.base, *self.base.iterdir()):
                os.chown(path, *self.run_as)

    def _as_user(self) -> dict[str, Any]:
        if self.run_as is None:
            return {}
        uid, gid = self.run_as
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self, timeout: float = 30) -> None:
        """Start on a free port (another one if it was taken meanwhile); wait until it answers."""
        processes.exit_on_signals()
        for attempt in range(3):
            self.port = _free_port()
            self._write_config()
            self.process = processes.spawn(
                [str(self.executable), str(self.ini_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.base,
                death_signal=signal.SIGTERM,
                **self._as_user(),
            )
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError:
                if attempt == 2 or "Address already in use" not in self.log():
                    raise

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log()}")
            try:
                psycopg.connect(self.url("pgbouncer"), connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"pgbouncer not ready within {timeout} s:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def admin(self, command: str) -> list[dict[str, Any]]:
        """The rows of an admin console command (``SHOW POOLS``, ``SHOW SERVERS``...)."""
        import psycopg
        from psycopg.rows import dict_row

        # The admin console speaks the simple query protocol only: a client-side cursor.
        with psycopg.connect(
            self.url("pgbouncer"), autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as conn:
            cursor = conn.cursor(row_factory=dict_row)
            cursor.execute(command)
            return cursor.fetchall() if cursor.description else []

    def server_connections(self, dbname: str) -> int:
        """Server connections PgBouncer holds for ``dbname`` (active, idle, used, tested, login)."""
        return sum(
            row["sv_active"] + row["sv_idle"] + row["sv_used"] + row["sv_tested"] + row["sv_login"]
            for row in self.admin("SHOW POOLS")
            if row["database"] == dbname
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop PgBouncer at once (SIGTERM: its clients are disconnected) and delete its directory; idempotent."""
        if os.getpid() != self.owner_pid:
            return
        if self.process is not None:
            processes.stop(self.process, timeout=10, signum=signal.SIGTERM)
            self.process = None
        shutil.rmtree(self.base, ignore_errors=True)
        atexit.unregister(self.stop)


def main() -> int:
    executable = find_pgbouncer()
    if executable is None:
        print(unavailable_reason())
        return 1
    version = subprocess.run([str(executable), "--version"], capture_output=True, text=True)
    print(f"{executable}: {version.stdout.splitlines()[0] if version.stdout else '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
