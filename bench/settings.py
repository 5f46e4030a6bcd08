"""Settings for the benchmarks: the test settings plus the yardstick's procrastinate tasks."""

from tests.settings import *  # noqa: F403

PROCRASTINATE_IMPORT_PATHS = ["bench.yardstick_tasks"]
PROCRASTINATE_WORKER_DEFAULTS = {}  # procrastinate's own defaults (5 s polling)
LOGGING = {"version": 1, "disable_existing_loggers": False}
CONN_MAX_AGE = 0
# The benchmark's tasks live outside INSTALLED_APPS (SISY_ALLOWED_CALLABLES' default).
SISY_ALLOWED_CALLABLES = ["tests.testapp", "bench.yardstick_tasks"]
