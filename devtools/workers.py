"""Stock ``python -m django procrastinate worker`` processes for the tests, the bench and the soak.

A worker runs from the checkout (``ROOT`` on ``PYTHONPATH``) with the given
settings module and database, writes its output to a log file of its own in
``log_dir``, and is stopped, with its whole process group, when the process
that started it exits (see :mod:`devtools.processes`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from devtools import processes

# The checkout: the workers' working directory and import path.
ROOT = Path(__file__).resolve().parent.parent

WORKER_COMMAND = ("procrastinate", "worker")


class WorkerProcess:
    """``python -m django <command>`` (a procrastinate worker by default), started at once.

    ``settings`` is its ``DJANGO_SETTINGS_MODULE``, ``database_url`` its
    ``DATABASE_URL``; ``env`` adds to (or overrides) both and this process's
    environment. A worker is named ``--name name`` in procrastinate's tables.
    """

    def __init__(
        self,
        name: str,
        *,
        settings: str,
        database_url: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_dir: Path,
        command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        self.name = name
        handle, path = tempfile.mkstemp(prefix=f"worker-{name}-", suffix=".log", dir=log_dir)
        self.log = Path(path)
        naming = ("--name", name) if tuple(command) == WORKER_COMMAND else ()
        with os.fdopen(handle, "wb") as log:
            self.process: subprocess.Popen[Any] = processes.spawn(
                [sys.executable, "-m", "django", *command, *naming, *args],
                cwd=ROOT,
                env={
                    **os.environ,
                    "DJANGO_SETTINGS_MODULE": settings,
                    "DATABASE_URL": database_url,
                    "PYTHONPATH": str(ROOT),
                    **(env or {}),
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        """Everything it has written so far (stdout and stderr)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        """Its last ``lines`` lines of output: what to show when it failed."""
        return "\n".join(self.output().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self, lines: int = 30) -> None:
        """Raise, with its exit status and last ``lines`` lines, if it has exited: a
        measurement or a wait must not go on without it."""
        if not self.alive():
            raise RuntimeError(
                f"worker {self.name} exited ({self.process.returncode}):\n{self.tail(lines)}"
            )

    def rss_mb(self) -> float | None:
        """Its resident memory in MiB, or None once it has exited."""
        import psutil

        try:
            return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20
        except psutil.Error:
            return None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system, all its threads) it has used so far; None once exited."""
        import psutil

        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (procrastinate's graceful stop: running jobs finish), SIGKILL after ``timeout`` s."""
        processes.stop(self.process, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: its jobs are left as they were."""
        processes.stop(self.process, signum=signal.SIGKILL)
