"""enqueue: the lag scenario's schedules, of a Django task on sisy-pg's ProcrastinateBackend.

Each run enqueues the task, the same worker runs its job, and the run follows
it to its end: lag = details.task_started_at - scheduled_for (the task's
start), and details.enqueued_at - scheduled_for (the enqueue). Beside it: the
lag scenario's figures (run both).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.core import DJANGO_NOOP, Bench
from bench.scenarios.lag import every_second_window, instants, lag_summary


def run(bench: Bench) -> None:
    m = bench.mode
    span = m.warmup + m.lag_seconds + 3
    with (
        bench.progress.phase("enqueue: sisy-pg, a Django task", span + 5),
        bench.attempt("enqueue"),
    ):
        bench.details["enqueue"] = result = enqueue_lag(bench)
        bench.figures["enqueue_lag_p50_ms"] = result["task_started"]["p50"]
        bench.figures["enqueue_lag_p99_ms"] = result["task_started"]["p99"]


def enqueue_lag(bench: Bench) -> dict[str, Any]:
    m = bench.mode
    start, end, cpu = every_second_window(bench, "enqueue", DJANGO_NOOP, "enqueue-")
    rows = bench.db.q(
        """SELECT extract(epoch FROM r.started_at - r.scheduled_for)::float8,
                  extract(epoch FROM (r.details ->> 'enqueued_at')::timestamptz
                                     - r.scheduled_for)::float8,
                  extract(epoch FROM (r.details ->> 'task_started_at')::timestamptz
                                     - r.scheduled_for)::float8,
                  r.status
             FROM sisy_taskrun AS r JOIN sisy_task AS t ON t.id = r.task_id
            WHERE t.label LIKE 'enqueue-%%'
              AND r.scheduled_for >= %s AND r.scheduled_for < %s""",
        [start, end],
    )
    expected = instants(start, end) * m.lag_tasks
    statuses = Counter(r[3] for r in rows)
    # Only a run that ended succeeded counts as its task started: another
    # outcome counts as infinitely late, as an instant that never ran does.
    succeeded = [r for r in rows if r[3] == "succeeded"]
    result = {
        "run_started": lag_summary([r[0] for r in rows if r[0] is not None], expected),
        "enqueued": lag_summary([r[1] for r in rows if r[1] is not None], expected),
        "task_started": lag_summary(
            [r[2] for r in succeeded if r[2] is not None], expected, statuses, cpu
        ),
    }
    if len(succeeded) < expected:
        bench.problems.append(
            f"enqueue: {len(succeeded):,} of {expected:,} expected runs ended succeeded "
            f"(runs in the window by status: {dict(statuses)})"
        )
    return result
