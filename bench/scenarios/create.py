"""create: tasks through the public API, ``task_with_callable`` + ``Task.objects.bulk_create``.

100,000 in full mode; fewer in quick mode, the time extrapolated.
"""

from __future__ import annotations

import time

from bench.core import NOOP, Bench


def run(bench: Bench) -> None:
    n = bench.mode.create
    bench.db.reset()
    with (
        bench.progress.phase(f"create: {n:,} tasks via bulk_create", 3 + n / 1500),
        bench.attempt("create"),
    ):
        bench.details["create"] = bulk_create(bench)


def bulk_create(bench: Bench) -> dict[str, float]:
    from sisy_pg.models import Task, task_with_callable

    n = bench.mode.create
    start = time.perf_counter()
    tasks = []
    for number in range(n):
        task = task_with_callable(
            NOOP, label=f"bulk-{number}", schedule=f"{number % 60} {number // 60 % 24} 1 1 *"
        )
        tasks.append(task)
    built = time.perf_counter()
    Task.objects.bulk_create(tasks, batch_size=1000)
    inserted = time.perf_counter()
    count = bench.db.one("SELECT count(*) FROM sisy_task WHERE label LIKE 'bulk-%%'")
    if count != n:
        raise RuntimeError(f"bulk_create stored {count} of {n} tasks")
    scale = 100_000 / n
    return {
        "n": n,
        "build_s": built - start,
        "insert_s": inserted - built,
        "total_s": inserted - start,
        "per_100k_s": (inserted - start) * scale,
        "extrapolated": n != 100_000,
    }
