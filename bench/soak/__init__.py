"""Soak and fault benchmark: many every-second tasks, real workers, one killed mid-run.

    .venv/bin/python -m bench.soak [--tasks 1000] [--workers 4] [--seconds 600] [--quick]

N tasks on '* * * * * *' (the 6th field is seconds), W `procrastinate worker`
processes for D seconds; at D/2 one worker is SIGKILLed and a replacement
started. Then every instant of every task in the measured window must be
either executed exactly once (the callable, bench.soak.tasks.record, writes a
row per execution) or covered by a row of sisy_taskrun saying why not
(coalesced, late, missed range, worker lost...). Instants not yet dealt with
when the workers stop count as pending: a run still queued or running, or an
instant a planner had not reached yet (at or after its task's next_run). A
machine too small for the load is expected: the point is that overload is
recorded, never silent, and never runs an instant twice.

Also reported: the lag of executed runs, each worker's RSS after warm-up and at
the end, and what became of the killed worker's runs. --quick is 60 s with
procrastinate's stalled-worker timeout at 10 s instead of 30 s, so that the
killed worker's runs are closed within the run.

Starts an embedded PostgreSQL unless DATABASE_URL is set; uses a fresh
database on it, dropped afterwards. Writes the table to bench/results/soak.md
and ends with a RESULT line. Exit status 1 if an instant ran twice or went
unrecorded.

bench/soak/runner.py runs it (``soak()``), bench/soak/measure.py reads the
outcomes, bench/soak/result.py is the report.
"""

from bench.soak.result import SoakResult
from bench.soak.runner import soak

__all__ = ["SoakResult", "soak"]
