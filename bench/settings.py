"""Settings for the benchmarks: the test settings plus the yardstick's procrastinate tasks.

``SISY_PLANNER_ENABLED`` in the environment (``False``/``0``) starts a worker
that runs jobs but never plans: the yardstick of the bench's idle and rss scenarios.
"""

import os

from tests.settings import *  # noqa: F403

PROCRASTINATE_IMPORT_PATHS = ["bench.yardstick_tasks"]
PROCRASTINATE_WORKER_DEFAULTS = {}  # procrastinate's own defaults (5 s polling)
LOGGING = {"version": 1, "disable_existing_loggers": False}
CONN_MAX_AGE = 0
# The benchmark's tasks live outside INSTALLED_APPS (SISY_ALLOWED_CALLABLES' default).
SISY_ALLOWED_CALLABLES = ["tests.testapp", "bench.yardstick_tasks"]
SISY_PLANNER_ENABLED = os.environ.get("SISY_PLANNER_ENABLED", "True").lower() not in (
    "0",
    "false",
    "no",
    "off",
)
