"""The ``SISY_*`` settings and their documented defaults.

Read through :data:`settings` so that tests overriding Django settings are seen
at once (nothing is cached at import time).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    # Schedule given to tasks created without one (Sisy's default).
    "DEFAULT_SCHEDULE": "* * * * *",
    # Time zone of tasks created without one; None means settings.TIME_ZONE.
    "DEFAULT_TIMEZONE": None,
    # procrastinate queue the runs are deferred to. Workers that serve this
    # queue (or every queue) also plan and fire the schedule.
    "QUEUE": "sisy",
    # How late (seconds) a run may start before its instant counts as missed:
    # the default of each task's "grace" option. A missed instant is dealt
    # with by the task's "missed" policy (docs/reliability.md).
    "GRACE": 60.0,
    # The most missed instants a task with the policy missed="all" catches up
    # (the latest ones), and the most runs it has waiting to start.
    "MISSED_ALL_LIMIT": 100,
    # How far ahead of its instant a run is claimed and handed to a worker,
    # which then starts it on the dot (instead of paying claim, notification,
    # fetch and connection set-up after the instant). 0 turns this off.
    "LEAD_TIME": 0.2,
    # Longest the planner sleeps without looking at the table, as a safety net
    # behind LISTEN/NOTIFY (e.g. a notification lost while reconnecting).
    "PLANNER_MAX_SLEEP": 30.0,
    # Finished runs older than this many days are deleted by the planners,
    # with their procrastinate jobs, and so are the task changes of the audit
    # (sisy_task_changes) older than that (None: keep the history forever).
    "RUN_RETENTION_DAYS": 14,
    # How many due tasks one claim transaction takes at most.
    "CLAIM_BATCH_SIZE": 100,
    # The most runs due at the same instant that one procrastinate job carries.
    # Its runner starts them together and calls their callables side by side
    # (at most --concurrency callables at once per worker), so the runs of a
    # busy instant cost one job fetch and one worker slot per group rather than
    # one each; 1 gives every run a job of its own. A larger value costs less,
    # a smaller one spreads an instant's runs over more workers.
    "RUNS_PER_JOB": 10,
    # False: the worker runs jobs but never plans (e.g. a worker on another queue
    # that should not touch the schedule).
    "PLANNER_ENABLED": True,
    # Module prefixes whose callables tasks may name (a list of dotted module
    # names: "myapp" allows myapp.tasks.cleanup, not myapplication.x). Checked
    # when a task is saved, in forms before anything is imported, and by the
    # worker before each run (raw SQL can write any path). None means the
    # project's own apps: the name of every app in INSTALLED_APPS except
    # Django's, procrastinate's, sisy's and the task framework's (see allowed_callable_prefixes and
    # docs/security.md).
    "ALLOWED_CALLABLES": None,
    # The deepest nesting (objects and arrays) and the largest size (bytes of
    # JSON text) of a task's userdata and options. Python refuses more when a
    # task is saved; the database refuses more than the hard limits, which
    # are these defaults: a setting may lower them, not raise them (see
    # sisy_pg/limits.py and check sisy.E008).
    "JSON_MAX_DEPTH": 32,
    "JSON_MAX_BYTES": 1048576,
    # --- Liveness (docs/reliability.md) ---
    # The most callable slots of a worker (its --concurrency) that the runs of
    # one task may hold at once, threads of runs that timed out but never
    # returned included. None: half the concurrency, at least 1. A run that
    # would take more is recorded as skipped (reason fair_share), not queued.
    "TASK_SLOTS": None,
    # Seconds every callable slot of a worker may stay held by runs past their
    # timeout before the worker exits (status 3) for its supervisor to restart
    # it: a thread cannot be stopped, a process can. None: never.
    "STUCK_EXIT_AFTER": 60.0,
    # Seconds a stopping worker (SIGTERM, SIGINT) waits for the callables
    # still running before it records them as interrupted and exits.
    # procrastinate's shutdown_graceful_timeout, when set, wins.
    "SHUTDOWN_TIMEOUT": 20.0,
    # A planner or runner statement slower than this many seconds is logged
    # as a stall, with its cause (a lock and who holds it, a lost connection).
    "STALL_WARNING": 2.0,
    # Seconds between the self-addressed NOTIFYs by which a worker checks that
    # notifications reach its LISTEN connections (a pooler in transaction
    # mode drops them); one is also sent at start.
    "NOTIFY_PROBE_INTERVAL": 60.0,
    # While notifications do not arrive: how often (seconds) the planner looks
    # for changed tasks and the worker for new jobs.
    "POLL_INTERVAL": 0.5,
    # The Django database alias of a direct connection (not through a pooler
    # in transaction mode) for the LISTEN connections of the planner and of
    # procrastinate's job listener. None: procrastinate's alias.
    "LISTEN_DATABASE": None,
    # Seconds a runner keeps trying to record a run's start or outcome while
    # the database is unreachable or read-only (a failover) before giving up
    # on that run (the housekeeping then closes it).
    "OUTAGE_TOLERANCE": 300.0,
    # --- Recurring django.tasks (docs/django-tasks.md) ---
    # Aliases of TASKS backends that do not write to sisy-pg's database, which
    # schedules may still enqueue on, accepting at most once per instant (the
    # enqueue cannot commit with the run's record). Schedules on any other such
    # backend are refused; sisy_pg.django_tasks.ProcrastinateBackend, and
    # django-tasks-db routed to sisy-pg's database, need no entry.
    "AT_MOST_ONCE_BACKENDS": (),
    # --- Observability and operator power ---
    # A bearer token that may read /sisy/metrics (Authorization: Bearer <token>);
    # None: staff users only (docs/metrics.md).
    "METRICS_TOKEN": None,
    # The most past instants one backfill (manage.py sisy backfill, sisy_backfill_v1, the
    # admin) asks for at once (docs/backfill.md).
    "BACKFILL_LIMIT": 1000,
}

#: Settings of the original Sisy that mean nothing here (see checks.py).
OBSOLETE = (
    "SISY_HEARTBEAT_FREQUENCY",
    "SISY_TICK_FREQUENCY",
    "SISY_HEARTBEAT_CHANNEL",
    "SISY_RUN_TASK_CHANNEL",
    "SISY_KILL_TASK_CHANNEL",
)


class _Settings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(django_settings, f"SISY_{name}", DEFAULTS[name])

    @property
    def default_timezone(self) -> str:
        return self.DEFAULT_TIMEZONE or django_settings.TIME_ZONE or "UTC"


settings = _Settings()


#: Apps never part of the default SISY_ALLOWED_CALLABLES: their modules are
#: no task's business (``os.system``-like power, or sisy's own machinery).
NEVER_ALLOWED_BY_DEFAULT = (
    "django",
    "procrastinate",
    "sisy_pg",
    "sisy",
    # The task framework's backport and its database backend: frameworks, not the project.
    "django_tasks",
    "django_tasks_db",
)


def is_under(path: str, prefix: str) -> bool:
    """Whether dotted ``path`` is ``prefix`` or inside it (``a.b`` is under ``a``, not ``a.bc``)."""
    return path == prefix or path.startswith(prefix + ".")


def allowed_callables_problem(value: Any) -> str | None:
    """What is wrong with a value of SISY_ALLOWED_CALLABLES, or None (check sisy.E007)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        return (
            "SISY_ALLOWED_CALLABLES must be None or a list of module prefixes "
            f"such as ['myapp'], not {type(value).__name__}"
        )
    for prefix in value:
        if not (isinstance(prefix, str) and all(p.isidentifier() for p in prefix.split("."))):
            return (
                "SISY_ALLOWED_CALLABLES must list dotted module names such as 'myapp' "
                f"or 'myapp.tasks', not {prefix!r}"
            )
    return None


def allowed_callable_prefixes() -> tuple[str, ...]:
    """The module prefixes of SISY_ALLOWED_CALLABLES, the default resolved.

    The default (None) is the name of each installed app but Django's,
    procrastinate's and sisy's.
    """
    configured = settings.ALLOWED_CALLABLES
    problem = allowed_callables_problem(configured)
    if problem:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(problem)
    if configured is not None:
        return tuple(configured)
    from django.apps import apps

    return tuple(
        config.name
        for config in apps.get_app_configs()
        if not any(is_under(config.name, never) for never in NEVER_ALLOWED_BY_DEFAULT)
    )


def default_schedule() -> str:
    """Field default for ``Task.schedule`` (a callable so migrations stay stable)."""
    expression: str = settings.DEFAULT_SCHEDULE
    return expression


def default_timezone() -> str:
    """Field default for ``Task.timezone``."""
    return settings.default_timezone
