"""What the database says after the soak: every expected instant's outcome, the checks, the report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from typing import Any


@dataclasses.dataclass
class SoakResult:
    """What the database says after the soak (see the module doc)."""

    tasks: int
    workers: int
    seconds: float
    concurrency: int
    stalled_timeout: float
    window: tuple[dt.datetime, dt.datetime]  # [T0, T1], whole seconds, both included
    stopped_at: dt.datetime
    killed_at: dt.datetime
    outcomes: dict[str, int]  # per expected instant: done, pending, status/reason, unrecorded
    executions: int  # rows of soak_execution, all instants
    duplicated: int  # (task, instant) executed more than once, all instants
    executed_not_succeeded: dict[str, int]  # executions whose run ended otherwise
    double_records: int  # instants inside a missed range that also have a row of their own
    lag: dict[str, float]  # seconds: p50, p95, max, n
    killed_runs: dict[str, int]  # the killed worker's runs (started or fetched): status/reason
    killed_open: int  # ...still queued or running at the end
    killed_closed_after: float | None  # seconds from the kill to the last of them closed
    pending_oldest: float | None  # seconds before the stop of the oldest pending instant
    worker_rows: list[dict[str, Any]]
    log_errors: int

    @property
    def expected(self) -> int:
        return sum(self.outcomes.values())

    @property
    def done(self) -> int:
        return self.outcomes.get("done", 0)

    @property
    def unrecorded(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith("unrecorded"))

    @property
    def pending(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith("pending"))

    def _status(self, status: str) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith(f"{status}/"))

    @property
    def ok(self) -> bool:
        return self.duplicated == 0 and self.unrecorded == 0 and self.done > 0

    def _rss(self, key: str) -> float:
        values = [row[key] for row in self.worker_rows if row[key] is not None]
        return max(values, default=0.0)

    def result_line(self) -> str:
        return (
            f"RESULT expected={self.expected} done={self.done} duplicated={self.duplicated} "
            f"unrecorded={self.unrecorded} pending={self.pending} "
            f"missed={self._status('missed')} skipped={self._status('skipped')} "
            f"failed={self._status('failed')} rss_start_mb={self._rss('rss_start_mb'):.1f} "
            f"rss_end_mb={self._rss('rss_end_mb'):.1f}"
        )

    def markdown(self) -> str:
        t0, t1 = self.window
        span = (t1 - t0).total_seconds() + 1
        lines = [
            (
                f"# sisy-pg soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"{os.cpu_count()} cores)"
            ),
            "",
            (
                f"{self.tasks:,} tasks on `* * * * * *`, {self.workers} workers "
                f"(`--concurrency {self.concurrency}`) for {self.seconds:g} s; one worker "
                f"SIGKILLed at {hms(self.killed_at)} and replaced; stalled-worker timeout "
                f"{self.stalled_timeout:g} s. Measured window {hms(t0)} to {hms(t1)} "
                f"({span:g} instants per task; workers told to stop at {hms(self.stopped_at)})."
            ),
            "",
            "## Every expected instant",
            "",
            "| outcome | instants | share |",
            "|---|---:|---:|",
        ]
        for outcome, count in sorted(self.outcomes.items(), key=lambda item: -item[1]):
            lines.append(f"| {outcome} | {count:,} | {_share(count, self.expected)} |")
        lines.append(f"| **expected** | **{self.expected:,}** | |")
        lines += [
            "",
            "## Checks",
            "",
            "| check | value |",
            "|---|---:|",
            f"| (task, instant) executed more than once (must be 0) | {self.duplicated} |",
            f"| expected instants with no covering row (must be 0) | {self.unrecorded} |",
            f"| instants of a missed range with a row of their own | {self.double_records} |",
            f"| executions, all instants | {self.executions:,} |",
            f"| executions per second in the window | {self.done / span:,.1f} |",
        ]
        for outcome, count in sorted(self.executed_not_succeeded.items()):
            lines.append(f"| executions whose run ended {outcome} | {count} |")
        if self.pending_oldest is not None:
            lines.append(
                f"| oldest pending instant, seconds before the stop | {self.pending_oldest:.1f} |"
            )
        lines.append(f"| error lines in the worker logs | {self.log_errors} |")
        if self.lag.get("n"):
            lines += [
                "",
                "## Lag of executed runs (started_at - scheduled_for, database clock)",
                "",
                "| runs | p50 s | p95 s | max s |",
                "|---:|---:|---:|---:|",
                (
                    f"| {int(self.lag['n']):,} | {self.lag['p50']:.3f} | {self.lag['p95']:.3f} "
                    f"| {self.lag['max']:.3f} |"
                ),
            ]
        lines += ["", "## The killed worker's runs (started or fetched when it died)", ""]
        lines += ["| status/reason | runs |", "|---|---:|"]
        for outcome, count in sorted(self.killed_runs.items()):
            lines.append(f"| {outcome} | {count} |")
        lines.append(f"| still queued or running at the end (must be 0) | {self.killed_open} |")
        if self.killed_closed_after is not None:
            lines.append(
                f"| closed by housekeeping, s after the kill | {self.killed_closed_after:.1f} |"
            )
        lines += [
            "",
            "## Workers (RSS from /proc/<pid>/status VmRSS)",
            "",
            "| worker | pid | RSS after warm-up MB | RSS at the end MB | fate |",
            "|---|---:|---:|---:|---|",
        ]
        for row in self.worker_rows:
            lines.append(
                f"| {row['name']} | {row['pid']} | {_mb(row['rss_start_mb'])} "
                f"| {_mb(row['rss_end_mb'])} | {row['fate']} |"
            )
        lines += ["", self.result_line()]
        return "\n".join(lines) + "\n"


def hms(instant: dt.datetime) -> str:
    return instant.astimezone(dt.timezone.utc).strftime("%H:%M:%S UTC")


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f} %" if total else "-"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
