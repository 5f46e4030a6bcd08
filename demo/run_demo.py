"""The demo: an embedded PostgreSQL, the demo project migrated, a worker, a line per fire.

    python demo/run_demo.py [--seconds N]

Stops on Ctrl-C or after N seconds; the embedded server is deleted on exit.
Set DATABASE_URL to use a PostgreSQL of your own instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

DEMO = Path(__file__).resolve().parent
ROOT = DEMO.parent
sys.path.insert(0, str(ROOT))

from devtools.embedded_pg import database_url  # noqa: E402


def manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO / "manage.py"), *args], cwd=DEMO, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    options = parser.parse_args()

    print("Starting PostgreSQL..." if not os.environ.get("DATABASE_URL") else "Using DATABASE_URL")
    database_url()  # exported to the child processes
    migrate = manage("migrate", "--no-input", capture_output=True, text=True)
    if migrate.returncode:
        print(migrate.stdout, migrate.stderr, sep="\n")
        return migrate.returncode
    print("Demo project migrated: the tasks its migrations created are")
    manage("sisy_status", check=True)

    log = tempfile.NamedTemporaryFile(prefix="sisy-demo-worker-", suffix=".log", delete=False)  # noqa: SIM115 (outlives this block)
    worker = subprocess.Popen(
        [sys.executable, str(DEMO / "manage.py"), "procrastinate", "worker"],
        cwd=DEMO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    print(
        f"\nWorker started (its log: {log.name}). A line per run as it ends"
        f"{'' if options.seconds is None else f', for {options.seconds:g} s'}; Ctrl-C stops.\n"
    )
    try:
        watch = ["sisy_watch"] + (
            [] if options.seconds is None else ["--seconds", str(options.seconds)]
        )
        manage(*watch)
    except KeyboardInterrupt:
        pass
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    print("\nFinal state:")
    manage("sisy_status")
    return 0


if __name__ == "__main__":
    sys.exit(main())
