"""python -m bench --smoke: the benchmark runs end to end and ends with a well-formed RESULT line.

Tiny sizes, no timing assertion: the figures of a smoke run mean nothing, only
that each scenario measured something.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# The bench is the same on every Django: once, in the first CI stage (left out of
# the matrix with the other "long" tests).
pytestmark = [pytest.mark.e2e, pytest.mark.long]

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "lag_p50_ms",
    "lag_p99_ms",
    "enqueue_lag_p50_ms",
    "enqueue_lag_p99_ms",
    "burst_ratio",
    "change_p99_ms",
    "scale_fetch_ratio",
    "idle_queries_per_s",
    "plan_us_per_task",
    "rss_mb",
)
VALUE = r"(?:nan|inf|-?\d+\.\d+)"


def test_smoke_run_prints_one_well_formed_result_line():
    # The test server (DATABASE_URL) is used; on it the idle figure, which
    # needs the log of a server the bench started, is nan.
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    results = [line for line in lines if line.startswith("RESULT")]
    assert len(results) == 1 and lines[-1] == results[0], result.stdout[-3000:]
    pattern = "^RESULT " + " ".join(f"{key}=({VALUE})" for key in KEYS) + "$"
    match = re.match(pattern, results[0])
    assert match, results[0]
    figures = dict(zip(KEYS, (float(v) for v in match.groups()), strict=True))
    # Each scenario measured something (smoke sizes say nothing about targets).
    for key in (
        "lag_p99_ms",
        "enqueue_lag_p99_ms",
        "burst_ratio",
        "change_p99_ms",
        "scale_fetch_ratio",
        "rss_mb",
    ):
        assert figures[key] == figures[key], f"{key} not measured:\n{result.stdout[-3000:]}"
    # Every instant of the Django task's schedules ran and its runs ended succeeded.
    assert "enqueue: " not in result.stdout, result.stdout[-3000:]
    assert "| figure | scenario | sisy-pg | yardstick (same run) | target | verdict |" in lines
