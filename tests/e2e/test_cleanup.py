"""Nothing outlives the demo or a test session: SIGTERM and SIGHUP clean up like Ctrl-C.

Each test starts a real process on its own throwaway PostgreSQL, waits until
its worker runs, signals it, and then looks for what it started: the
PostgreSQL processes, the worker, the data directory and the temporary files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest

from devtools.embedded_pg import find_bindir
from devtools.workers import ROOT
from tests.helpers import wait_until


@pytest.fixture(autouse=True)
def _postgres_binaries():
    try:
        find_bindir()
    except RuntimeError as error:
        pytest.skip(f"no PostgreSQL binaries for a throwaway server: {error}")


def _default_hangup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class Watched:
    """A process started with its own throwaway PostgreSQL, its output collected."""

    def __init__(self, command: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("DATABASE_URL", None)  # so that it starts its own server
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # As a terminal's shell starts it: a suite run under nohup (or by a
            # runner that ignores SIGHUP) must not pass that on to the demo.
            preexec_fn=_default_hangup,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        try:
            wait_until(
                lambda: text in self.output() or self.process.poll() is not None, timeout=timeout
            )
        finally:
            if text not in self.output():
                self.kill()
        assert text in self.output(), self.output()

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def kill(self) -> None:
        for child in self.descendants():
            child.kill()
        self.process.kill()
        self.process.wait()


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def server_directory(processes: list[psutil.Process]) -> Path:
    """The throwaway server's directory, from its postmaster's ``-D <dir>/data``."""
    for process in processes:
        command = process.cmdline()
        if "-D" in command and Path(command[0]).name == "postgres":
            return Path(command[command.index("-D") + 1]).parent
    raise AssertionError(f"no postmaster among {[p.cmdline() for p in processes]}")


def signal_and_check(
    watched: Watched, signum: int, *, expected_status: int, files: list[Path], group: bool
) -> None:
    started = watched.descendants()
    try:
        server = server_directory(started)
        assert any("worker" in process.cmdline() for process in started), started
        paths = [server, *files]
        assert all(path.exists() for path in paths), paths
    except BaseException:
        watched.kill()
        raise

    if group:  # as a terminal's hang-up does: the whole foreground process group
        os.killpg(watched.process.pid, signum)
    else:  # as `kill PID` does
        watched.process.send_signal(signum)
    try:
        status = watched.process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        watched.kill()
        raise
    watched.reader.join(timeout=5)

    assert status == expected_status, watched.output()
    left = [p for p in started if alive(p)]
    assert not left, f"still running: {[p.cmdline() for p in left]}\n{watched.output()}"
    assert not [path for path in paths if path.exists()], watched.output()
    strays = [
        process.info["cmdline"]
        for process in psutil.process_iter(["cmdline"])
        if str(server) in " ".join(process.info["cmdline"] or ())
    ]
    assert not strays, strays


@pytest.mark.parametrize(
    ("signum", "group"), [(signal.SIGTERM, False), (signal.SIGHUP, True)], ids=["SIGTERM", "SIGHUP"]
)
def test_demo_leaves_nothing_behind(signum, group):
    demo = Watched([sys.executable, str(ROOT / "demo" / "run_demo.py")])
    demo.wait_for("Worker started")
    (log,) = re.findall(r"its log: (\S+),", demo.output())
    signal_and_check(
        demo, signum, expected_status=128 + signum, files=[Path(log).parent], group=group
    )
    assert "Final state" not in demo.output()


PROBE = """
import time

from tests.e2e.helpers import LOGS


def test_probe(start_worker):
    start_worker("probe")
    print("PROBE READY", LOGS, flush=True)
    time.sleep(300)
"""
# The suite's fixtures, as tests/ and tests/e2e have them (the probe lives elsewhere).
PROBE_CONFTEST = """
from tests.conftest import *  # noqa: F403
from tests.e2e.conftest import *  # noqa: F403
"""


def test_test_session_leaves_nothing_behind():
    with tempfile.TemporaryDirectory(prefix="sisy-probe-") as directory:
        probe = Path(directory) / "test_probe.py"
        probe.write_text(PROBE)
        (Path(directory) / "conftest.py").write_text(PROBE_CONFTEST)
        session = Watched(
            [
                sys.executable,
                "-m",
                "pytest",
                "-c",
                str(ROOT / "pyproject.toml"),
                "--rootdir",
                str(ROOT),
                "--confcutdir",
                directory,
                "-p",
                "no:cacheprovider",
                "-s",
                "-q",
                str(probe),
            ]
        )
        session.wait_for("PROBE READY")
        (logs,) = re.findall(r"PROBE READY (\S+)", session.output())
        # pytest reports an interrupted session with status 2.
        signal_and_check(
            session, signal.SIGTERM, expected_status=2, files=[Path(logs)], group=False
        )
