"""sisy-pg's benchmarks, each side by side with a yardstick, in one run.

    .venv/bin/python bench/run.py [--seconds 20] [--tasks 10] [--sizes 1000,10000,100000]

1. Firing lag (start of a run minus its scheduled instant), one worker with
   --concurrency equal to the number of tasks, on the same database:
   - sisy-pg: N tasks on '* * * * * *';
   - yardstick: N procrastinate jobs per second deferred with schedule_at
     (procrastinate's default 5 s polling);
   - yardstick: N of procrastinate's own periodic tasks on '* * * * * *'.
2. Cost of one planning step as the number of *defined* tasks grows, 10 due:
   - sisy-pg: one planner step firing the 10 due (Planner.fire_due: claim,
     decide, record the runs and their jobs) and the planner's "when next" query;
   - yardstick: procrastinate_fetch_job_v2 with one parked future job per
     task (the design the brief rules out), 10 due.

Starts an embedded PostgreSQL unless DATABASE_URL is set; uses a fresh
database on it. Writes the tables to bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import psycopg.conninfo  # noqa: E402

from devtools.embedded_pg import database_url, with_database  # noqa: E402


def fresh_database() -> str:
    server = database_url()
    name = f"sisy_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(server, name)


def start_worker(url: str, concurrency: int, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "procrastinate",
            "worker",
            "--concurrency",
            str(concurrency),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": url,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PYTHONPATH": str(ROOT),
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)


def stats_ms(lags: list[float]) -> dict[str, float]:
    lags = sorted(lags)
    if not lags:
        return {"n": 0}
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]  # noqa: E731
    return {
        "n": len(lags),
        "p50": pick(0.5) * 1000,
        "p95": pick(0.95) * 1000,
        "max": lags[-1] * 1000,
    }


def query(url: str, sql: str, params=None):
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def bench_lag_sisy(url: str, tasks: int, seconds: float) -> dict[str, float]:
    from sisy_pg.models import Task, task_with_callable

    worker = start_worker(url, concurrency=tasks)
    time.sleep(3)  # worker start-up is not what is measured
    created = time.time()
    for i in range(tasks):
        task_with_callable(
            "bench.yardstick_tasks.noop", label=f"bench-{i}", schedule="* * * * * *"
        ).save()
    time.sleep(seconds)
    Task.objects.filter(label__startswith="bench-").update(enabled=False)
    time.sleep(1)
    stop_worker(worker)
    rows = query(
        url,
        """SELECT extract(epoch FROM started_at - scheduled_for)
                           FROM sisy_taskrun WHERE started_at IS NOT NULL
                            AND scheduled_for > to_timestamp(%s)""",
        [created + 1],
    )
    return stats_ms([r[0] for r in rows])


def bench_lag_schedule_at(url: str, tasks: int, seconds: float) -> dict[str, float]:
    from procrastinate.contrib.django import app

    first = int(time.time()) + 5
    instants = [first + n for n in range(int(seconds))]
    for instant in instants:
        for _ in range(tasks):
            app.configure_task("bench.at", schedule_at=_aware(instant)).defer(instant=instant)
    worker = start_worker(url, concurrency=tasks)
    time.sleep(max(0, instants[-1] - time.time()) + 7)
    stop_worker(worker)
    rows = query(
        url,
        """SELECT extract(epoch FROM e.at - j.scheduled_at)
                           FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
                          WHERE j.task_name = 'bench.at' AND e.type = 'started'""",
    )
    return stats_ms([r[0] for r in rows])


def bench_lag_periodic(url: str, tasks: int, seconds: float) -> dict[str, float]:
    worker = start_worker(url, concurrency=tasks, BENCH_PERIODIC=str(tasks))
    started = time.time()
    time.sleep(seconds + 3)
    stop_worker(worker)
    rows = query(
        url,
        """SELECT extract(epoch FROM e.at) - (j.args->>'timestamp')::float8
                           FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
                          WHERE j.task_name = 'bench.periodic' AND e.type = 'started'
                            AND (j.args->>'timestamp')::float8 > %s""",
        [started + 2],
    )
    return stats_ms([r[0] for r in rows])


def _aware(epoch: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc)


def timed(conn: psycopg.Connection, sql: str, repeat: int) -> float:
    """Median ms of ``sql`` in a transaction that is rolled back (the state stays the same)."""
    durations = []
    for _ in range(repeat):
        with conn.transaction(force_rollback=True):
            start = time.perf_counter()
            conn.execute(sql).fetchall()
            durations.append(time.perf_counter() - start)
    return statistics.median(durations) * 1000


def bench_scaling(url: str, size: int) -> dict[str, float]:
    """Each system measured on its own: ``size`` defined tasks, 10 of them due."""
    info = '{"func_type": "function", "func_path": "bench.yardstick_tasks.noop"}'
    result = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE sisy_task CASCADE")
        conn.execute("DELETE FROM procrastinate_jobs")
        conn.execute(
            """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
               SELECT 'defined-' || n, %s, '0 0 1 1 *', 'UTC', now() + interval '300 days' + n * interval '1 s'
                 FROM generate_series(1, %s) AS n""",
            [info, size],
        )
        conn.execute(
            """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
               SELECT 'due-' || n, %s, '* * * * *', 'UTC', now() - interval '1 ms'
                 FROM generate_series(1, 10) AS n""",
            [info],
        )
        conn.execute("ANALYZE sisy_task")
        result["claim"] = timed_fire_due(url, 15)
        result["next"] = timed(conn, _planner_state_sql(), 50)
        conn.execute("TRUNCATE sisy_task CASCADE")

        conn.execute(
            """INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
               SELECT 'sisy', 'bench.parked', '{}', now() + interval '300 days' + n * interval '1 s'
                 FROM generate_series(1, %s) AS n""",
            [size],
        )
        conn.execute(
            """INSERT INTO procrastinate_jobs (queue_name, task_name, args)
               SELECT 'sisy', 'bench.due', '{}' FROM generate_series(1, 10)"""
        )
        conn.execute("ANALYZE procrastinate_jobs")
        ((worker_id,),) = conn.execute("SELECT procrastinate_register_worker_v1()").fetchall()
        result["fetch"] = timed(
            conn, f"SELECT * FROM procrastinate_fetch_job_v2(NULL, {worker_id})", 15
        )
        conn.execute("DELETE FROM procrastinate_jobs")
    return result


def timed_fire_due(url: str, repeat: int) -> float:
    """Median ms of one planner step firing what is due (claim, decide, record), rolled back."""
    import asyncio

    from psycopg.rows import dict_row

    from sisy_pg import procrastinate_seam, worker

    async def measure() -> float:
        planner = worker.make_planner(
            procrastinate_seam.WorkerOptions(queues=None, stalled_worker_timeout=30)
        )
        durations = []
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            for _ in range(repeat):
                async with conn.transaction(force_rollback=True):
                    start = time.perf_counter()
                    await planner.fire_due(conn)
                    durations.append(time.perf_counter() - start)
        return statistics.median(durations) * 1000

    return asyncio.run(measure())


def _planner_state_sql() -> str:
    from sisy_pg import sql_files

    return sql_files.queries()["planner_state"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--sizes", default="1000,10000,100000")
    options = parser.parse_args()

    server = database_url()
    url = fresh_database()
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    lines = [
        (
            f"# sisy-pg benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} cores, PostgreSQL {query(url, 'SHOW server_version')[0][0]})"
        ),
        "",
    ]

    print("1/2 firing lag...", flush=True)
    lag = {
        "sisy-pg (this project)": bench_lag_sisy(url, options.tasks, options.seconds),
        "procrastinate schedule_at jobs (yardstick)": bench_lag_schedule_at(
            url, options.tasks, options.seconds
        ),
        "procrastinate periodic tasks (yardstick)": bench_lag_periodic(
            url, options.tasks, options.seconds
        ),
    }
    lines += [
        f"## Firing lag: {options.tasks} every-second schedules for {options.seconds:g} s, one worker",
        "",
        "| system | runs | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in lag.items():
        if s["n"]:
            lines.append(
                f"| {name} | {s['n']} | {s['p50']:.1f} | {s['p95']:.1f} | {s['max']:.1f} |"
            )
        else:
            lines.append(f"| {name} | 0 | - | - | - |")

    print("2/2 planning cost...", flush=True)
    lines += [
        "",
        "## One planning step as defined tasks grow (10 due; median ms)",
        "",
        (
            "| defined tasks | sisy-pg fire 10 due | sisy-pg next wake-up | "
            "procrastinate fetch, one parked job per task (yardstick) |"
        ),
        "|---:|---:|---:|---:|",
    ]
    for size in [int(s) for s in options.sizes.split(",")]:
        r = bench_scaling(url, size)
        lines.append(f"| {size:,} | {r['claim']:.2f} | {r['next']:.2f} | {r['fetch']:.2f} |")

    report = "\n".join(lines) + "\n"
    print("\n" + report)
    (ROOT / "bench" / "results" / "latest.md").write_text(report)
    from django.db import connections

    connections.close_all()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            f'DROP DATABASE "{psycopg.conninfo.conninfo_to_dict(url)["dbname"]}" WITH (FORCE)'
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
