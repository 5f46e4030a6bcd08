"""What a figure depends on besides sisy-pg: the machine, its load, the versions, the commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

from bench.core import Database
from devtools.workers import ROOT


def machine_and_versions(db: Database) -> dict[str, str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sisy_pg", "sql"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in sisy_pg/ or sql/"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {ram} RAM, {cpu}, {platform.system()} {platform.release()}",
        "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "django": version("django"),
        "procrastinate": version("procrastinate"),
        "psycopg": version("psycopg"),
        "postgresql": db.one("SHOW server_version"),
        "commit": commit,
    }
