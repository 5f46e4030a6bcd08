"""``python -m bench.soak``: the soak on a throwaway database, its report to bench/results/soak.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bench.soak
from bench.soak.runner import DEFAULT_CONCURRENCY, soak
from devtools import databases, embedded_pg, processes
from devtools.workers import ROOT


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=(bench.soak.__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--quick", action="store_true", help="60 s, stalled-worker timeout 10 s")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--stalled-timeout", type=float, help="procrastinate's stalled_worker_timeout (s)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    options = parser.parse_args()
    seconds = 60 if options.quick else options.seconds
    stalled = options.stalled_timeout or (10 if options.quick else 30)

    processes.exit_on_signals()  # SIGTERM, SIGHUP: clean up as on Ctrl-C
    with databases.empty_database(embedded_pg.database_url(), "sisy_soak") as url:
        result = soak(
            url,
            tasks=options.tasks,
            workers=options.workers,
            seconds=seconds,
            concurrency=options.concurrency,
            stalled_timeout=stalled,
            progress=lambda line: print(line, flush=True),
        )
    report = result.markdown()
    print("\n" + report, end="")
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(report)
    return 0 if result.ok else 1


try:
    sys.exit(main())
except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP: the finally blocks ran
    print(f"soak interrupted ({str(interrupt) or 'SIGINT'})", file=sys.stderr)
    sys.exit(130)
