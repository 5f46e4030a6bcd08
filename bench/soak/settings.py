"""Settings for the soak (bench/soak): the benchmarks' settings plus its callable.

SOAK_STALLED_TIMEOUT (seconds) sets procrastinate's stalled_worker_timeout, after
which a killed worker's runs are closed by sisy's housekeeping; its heartbeat is
a third of it, procrastinate's own ratio (10 s of 30 s).
"""

import os

from bench.settings import *  # noqa: F403
from bench.settings import SISY_ALLOWED_CALLABLES

SISY_ALLOWED_CALLABLES = [*SISY_ALLOWED_CALLABLES, "bench.soak.tasks"]

_STALLED = float(os.environ.get("SOAK_STALLED_TIMEOUT", "30"))
PROCRASTINATE_WORKER_DEFAULTS = {
    "stalled_worker_timeout": _STALLED,
    "update_heartbeat_interval": _STALLED / 3,
}
# Each worker thread keeps its connection, as a deployment under load would:
# a new PostgreSQL backend per run would cost more CPU than the run itself.
CONN_MAX_AGE = 600
# Warnings and errors only (planner failures, missed instants), with a time,
# into the worker's log file; coalesced fires are INFO and would flood it.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
