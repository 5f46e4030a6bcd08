"""``python -m bench``: the options, the throwaway database, the scenarios in order, the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import psycopg

import bench
from bench.core import RESULTS, SETTINGS, Bench, Database
from bench.machine import machine_and_versions
from bench.modes import MODES, SCENARIOS, expected_seconds
from bench.progress import Progress
from bench.report import DEFAULT_CONCURRENCY, report, result_line
from bench.scenarios import burst, change, enqueue, idle, lag, metrics, scale
from devtools import databases, embedded_pg, processes

RUNS: dict[str, Callable[[Bench], None]] = {
    "lag": lag.run,
    "enqueue": enqueue.run,
    "burst": burst.run,
    "change": change.run,
    "scale": scale.run,
    "metrics": metrics.run,
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(bench.__doc__ or "").split("\n\n")[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="under 5 minutes on 2 cores")
    group.add_argument("--smoke", action="store_true", help="tiny sizes: checks the bench runs")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="worker --concurrency for the lag, change, idle and rss scenarios (default 64: "
        "what docs/operations.md recommends for 50 runs due at once, one slot each; the "
        "burst is always 8)",
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the workers' logs (their path is printed)"
    )
    parser.add_argument(
        "--no-parked", action="store_true", help="skip the parked-jobs yardstick at the big size"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    options = arguments.parse_args(argv)
    mode = MODES["quick" if options.quick else "smoke" if options.smoke else "full"]
    chosen = {s.strip() for s in options.only.split(",") if s.strip()}
    unknown = chosen - set(SCENARIOS)
    if unknown:
        arguments.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    only = [name for name in SCENARIOS if name in chosen]

    processes.exit_on_signals()
    if not os.environ.get("DATABASE_URL"):
        # The idle scenario counts the workers' statements in the server's log.
        embedded_pg.SERVER_SETTINGS["log_line_prefix"] = idle.LOG_LINE_PREFIX
    began = time.monotonic()
    progress = Progress(expected_seconds(mode, chosen))
    logs = Path(tempfile.mkdtemp(prefix="sisy-bench-logs-"))
    url = db = run = text = failure = None
    try:
        with progress.phase("starting PostgreSQL, migrating", 8):
            server = embedded_pg.database_url()
            embedded = embedded_pg.started_server()  # before DATABASE_URL names the bench's
            url = databases.create_database(server, "sisy_bench")
            db = migrated(url)
        info = machine_and_versions(db)
        run = Bench(
            mode,
            db,
            progress,
            embedded,
            logs,
            concurrency=options.concurrency,
            parked_big=not options.no_parked,
        )
        for name in only:
            RUNS[name](run)
        load_end = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        text = report(run, only, info, load_end, time.monotonic() - began)
        if run.plans:
            # A smoke run's plans go with the workers' logs (kept with --keep-logs).
            folder = logs if mode.name == "smoke" else RESULTS
            folder.mkdir(exist_ok=True)
            (folder / f"plans-{mode.name}.txt").write_text("\n".join(run.plans) + "\n")
    except Exception as exc:  # a broken setup: still one RESULT line (all nan), exit 1
        failure = f"{type(exc).__name__}: {exc}"
        progress.note(traceback.format_exc())
    finally:
        progress.close()
        if run is not None:
            run.workers.stop_all()
        if options.keep_logs:
            print(f"workers' logs: {logs}", file=sys.stderr)
        else:
            shutil.rmtree(logs, ignore_errors=True)
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if db is not None:
            db.close()
        if url is not None:
            with contextlib.suppress(psycopg.Error):
                databases.drop_database(url)
    if text is None or run is None:
        print(f"bench failed: {failure}")
        print(result_line({}), flush=True)
        return 1
    RESULTS.mkdir(exist_ok=True)
    if mode.name != "smoke":
        (RESULTS / "latest.md").write_text(text)
    if mode.name == "full":
        (RESULTS / f"full-{time.strftime('%Y-%m-%d', time.gmtime())}.md").write_text(text)
    print(text)
    print(result_line(run.figures), flush=True)
    return 0


def migrated(url: str) -> Database:
    """Django set up in this process on the bench's database, migrated: its connection."""
    import django
    from django.core.management import call_command

    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    django.setup()
    call_command("migrate", verbosity=0)
    return Database(url)
