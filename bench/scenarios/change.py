"""change: raw ``UPDATE sisy_task SET schedule`` until next_run is rewritten (polled ~1 ms).

Samples alternate a pending fire a year away and one under a second away (an
every-second task); fires of the old schedule claimed before a change must
not run after it.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from typing import Any

import psycopg

from bench.core import NOOP, Bench, summary_ms


def run(bench: Bench) -> None:
    samples = bench.mode.change_samples
    with (
        bench.progress.phase(f"change: {samples} schedule changes", 8 + samples * 0.17),
        bench.attempt("change"),
    ):
        bench.details["change"] = result = change_samples(bench)
        bench.figures["change_p99_ms"] = result["all"]["p99"]


def change_samples(bench: Bench) -> dict[str, Any]:
    from croniter import croniter

    from sisy_pg.models import task_with_callable

    bench.db.reset()
    (worker,) = bench.workers.start_ready([("change", bench.concurrency, {})])
    task = task_with_callable(NOOP, label="change", schedule="0 0 1 1 *")
    task.timezone = "UTC"
    task.save()
    task_id = task.pk
    poll = psycopg.connect(bench.db.url, autocommit=True)
    writer = psycopg.connect(bench.db.url, autocommit=True)
    samples: dict[str, list[float]] = {"far → near": [], "near → far": []}
    changes: list[tuple[dt.datetime, str]] = []  # (commit time, what the schedule became)
    timeouts = 0
    near = False
    try:
        for number in range(bench.mode.change_samples):
            if near:
                kind = "near → far"
                schedule = f"{number % 60} {(number // 60) % 24} 1 1 *"
            else:
                kind = "far → near"
                schedule = "* * * * * *"
            time.sleep(random.uniform(0.05, 0.25))
            if number % 20 == 0:
                bench.workers.check_alive(worker)
            start = time.perf_counter()
            [(committed_at,)] = writer.execute(
                "UPDATE sisy_task SET schedule = %s WHERE id = %s RETURNING clock_timestamp()",
                [schedule, task_id],
            ).fetchall()
            # Near → far: the yearly schedule's next instant; far → near: within 2 s.
            expected = (
                croniter(schedule, committed_at.astimezone(dt.timezone.utc)).get_next(dt.datetime)
                if near
                else None
            )
            elapsed = seconds_to_rewrite(
                poll, task_id, start, expected, committed_at + dt.timedelta(seconds=2)
            )
            samples[kind].append(elapsed)
            timeouts += math.isinf(elapsed)
            changes.append((committed_at, kind))
            near = not near
        # The last change: let what the old schedule had queued play out.
        time.sleep(1.5)
    finally:
        poll.close()
        writer.close()
        bench.workers.stop(worker)
    # Fires of an every-second schedule after a change that made it yearly:
    # a run queued before the change (claimed ahead) must never start.
    windows = [
        (at, changes[i + 1][0] if i + 1 < len(changes) else None)
        for i, (at, kind) in enumerate(changes)
        if kind == "near → far"
    ]
    queued_at_change = ran_after_change = 0
    for start_at, end_at in windows:
        rows = bench.db.q(
            """SELECT status, started_at FROM sisy_taskrun
                WHERE task_id = %s AND scheduled_for > %s
                  AND (%s::timestamptz IS NULL OR scheduled_for < %s)""",
            [task_id, start_at, end_at, end_at],
        )
        queued_at_change += len(rows)
        ran_after_change += sum(1 for status, started in rows if started is not None)
    all_samples = [s for values in samples.values() for s in values]
    return {
        "all": summary_ms(all_samples),
        **{kind: summary_ms(values) for kind, values in samples.items()},
        "timeouts": timeouts,
        "fires_after_change": queued_at_change,
        "fires_after_change_ran": ran_after_change,
        "changes_to_far": len(windows),
    }


def seconds_to_rewrite(
    poll: psycopg.Connection[Any],
    task_id: int,
    started: float,
    expected: dt.datetime | None,
    by: dt.datetime,
) -> float:
    """Seconds from ``started`` until the task's next_run is ``expected`` (or, with none
    expected, a fire no later than ``by``), polled every ~1 ms; inf after 5 s."""
    while True:
        [(next_run,)] = poll.execute(
            "SELECT next_run FROM sisy_task WHERE id = %s", [task_id], prepare=True
        ).fetchall()
        elapsed = time.perf_counter() - started
        if (next_run == expected) if expected else (next_run is not None and next_run <= by):
            return elapsed
        if elapsed > 5:
            return math.inf
        time.sleep(0.001)
