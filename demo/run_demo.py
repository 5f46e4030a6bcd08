"""The demo: an embedded PostgreSQL, the demo project migrated, a worker, a line per fire.

    python demo/run_demo.py [--seconds N]

Stops on Ctrl-C, SIGTERM, SIGHUP or after N seconds; the worker, the embedded
server and the temporary files are deleted on exit.
Set DATABASE_URL to use a PostgreSQL of your own instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEMO = Path(__file__).resolve().parent
ROOT = DEMO.parent
sys.path.insert(0, str(ROOT))

from devtools import processes  # noqa: E402
from devtools.embedded_pg import database_url  # noqa: E402


def manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO / "manage.py"), *args], cwd=DEMO, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    options = parser.parse_args()
    # SIGTERM and SIGHUP stop the demo like Ctrl-C, through the same cleanup.
    processes.exit_on_signals()

    print(
        "Starting PostgreSQL..." if not os.environ.get("DATABASE_URL") else "Using DATABASE_URL",
        flush=True,
    )
    database_url()  # exported to the child processes
    migrate = manage("migrate", "--no-input", capture_output=True, text=True)
    if migrate.returncode:
        print(migrate.stdout, migrate.stderr, sep="\n")
        return migrate.returncode
    print("Demo project migrated: the tasks its migrations created are", flush=True)
    manage("sisy_status", check=True)

    logs = Path(tempfile.mkdtemp(prefix="sisy-demo-"))
    log_path = logs / "worker.log"
    try:
        with open(log_path, "wb") as log:
            # Its own session (Ctrl-C reaches the demo, which stops it in order),
            # stopped at exit whatever happens, killed if the demo dies.
            worker = processes.spawn(
                [sys.executable, str(DEMO / "manage.py"), "procrastinate", "worker"],
                cwd=DEMO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        print(
            f"\nWorker started (its log: {log_path}, deleted on exit). A line per run as it ends"
            f"{'' if options.seconds is None else f', for {options.seconds:g} s'}; Ctrl-C stops.\n",
            flush=True,
        )
        try:
            watch = ["sisy_watch"] + (
                [] if options.seconds is None else ["--seconds", str(options.seconds)]
            )
            manage(*watch)
        except KeyboardInterrupt:
            pass
        finally:
            died = worker.poll()
            processes.stop(worker, timeout=30)
            if died:
                print(f"\nThe worker exited with status {died}; its log:\n{log_path.read_text()}")
        if processes.received_signal() is None:
            print("\nFinal state:", flush=True)
            manage("sisy_status")
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        status = main()
    except KeyboardInterrupt:
        status = 130
    signum = processes.received_signal()
    sys.exit(128 + signum if signum else status)
