"""System checks: misconfigurations reported by ``manage.py check`` and at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks

from . import conf, limits, schedule

PROCRASTINATE_APP = "procrastinate.contrib.django"


def app_order_errors(app_names: list[str]) -> list[checks.CheckMessage]:
    """procrastinate's app must be ready before ours: we hook into its App."""
    if PROCRASTINATE_APP not in app_names or (
        "sisy_pg" in app_names and app_names.index(PROCRASTINATE_APP) > app_names.index("sisy_pg")
    ):
        return [
            checks.Error(
                f"'{PROCRASTINATE_APP}' must be in INSTALLED_APPS before 'sisy_pg'.",
                hint=f'INSTALLED_APPS = [..., "{PROCRASTINATE_APP}", "sisy_pg"]',
                id="sisy.E001",
            )
        ]
    return []


@checks.register()
def check_installed_apps(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    return app_order_errors([config.name for config in apps.get_app_configs()])


def database_errors(alias: str, engine: str) -> list[checks.CheckMessage]:
    if "postgresql" not in engine:
        return [
            checks.Error(
                f"sisy-pg needs PostgreSQL; DATABASES[{alias!r}] uses {engine or 'nothing'}.",
                id="sisy.E002",
            )
        ]
    return []


@checks.register(checks.Tags.database)
def check_database(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[checks.CheckMessage]:
    from .procrastinate_seam import database_alias

    alias = database_alias()
    return database_errors(alias, settings.DATABASES.get(alias, {}).get("ENGINE", ""))


@checks.register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    try:
        schedule.validate_schedule(conf.settings.DEFAULT_SCHEDULE)
    except schedule.ScheduleError as exc:
        messages.append(checks.Error(f"SISY_DEFAULT_SCHEDULE: {exc}", id="sisy.E003"))
    try:
        schedule.get_timezone(conf.settings.default_timezone)
    except schedule.ScheduleError as exc:
        messages.append(checks.Error(f"SISY_DEFAULT_TIMEZONE / TIME_ZONE: {exc}", id="sisy.E004"))
    if not settings.USE_TZ:
        messages.append(
            checks.Error("sisy-pg stores aware datetimes: set USE_TZ = True.", id="sisy.E005")
        )
    # name: (may be 0, may be None)
    numbers = {
        "GRACE": (True, False),
        "MISSED_ALL_LIMIT": (False, False),
        "LEAD_TIME": (True, False),
        "PLANNER_MAX_SLEEP": (False, False),
        "CLAIM_BATCH_SIZE": (False, False),
        "RUNS_PER_JOB": (False, False),
        "RUN_RETENTION_DAYS": (False, True),
        "TASK_SLOTS": (False, True),
        "STUCK_EXIT_AFTER": (False, True),
        "SHUTDOWN_TIMEOUT": (True, False),
        "STALL_WARNING": (False, False),
        "NOTIFY_PROBE_INTERVAL": (False, False),
        "POLL_INTERVAL": (False, False),
        "OUTAGE_TOLERANCE": (True, False),
        "BACKFILL_LIMIT": (False, False),
    }
    for name, (zero_ok, none_ok) in numbers.items():
        value = getattr(conf.settings, name)
        if value is None and none_ok:
            continue
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or value < 0 or (value == 0 and not zero_ok):
            allowed = (
                "a positive number" + (" or 0" if zero_ok else "") + (" or None" if none_ok else "")
            )
            messages.append(
                checks.Error(f"SISY_{name} must be {allowed}, not {value!r}.", id="sisy.E006")
            )
    for name, hard in (
        ("JSON_MAX_DEPTH", limits.HARD_MAX_DEPTH),
        ("JSON_MAX_BYTES", limits.HARD_MAX_BYTES),
    ):
        value = getattr(conf.settings, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= hard):
            messages.append(
                checks.Error(
                    f"SISY_{name} must be a whole number from 1 to {hard}, not {value!r}.",
                    hint=f"The database refuses more than {hard}: a setting may only lower it.",
                    id="sisy.E008",
                )
            )
    listen = conf.settings.LISTEN_DATABASE
    if listen is not None and listen not in settings.DATABASES:
        messages.append(
            checks.Error(
                f"SISY_LISTEN_DATABASE names {listen!r}, which is not in DATABASES.",
                hint="The alias of a direct connection to the same database, or None.",
                id="sisy.E009",
            )
        )
    at_most_once = conf.settings.AT_MOST_ONCE_BACKENDS
    tasks = getattr(settings, "TASKS", {})
    if not isinstance(at_most_once, list | tuple) or not all(
        isinstance(alias, str) and alias in tasks for alias in at_most_once
    ):
        messages.append(
            checks.Error(
                f"SISY_AT_MOST_ONCE_BACKENDS must be a list of aliases of TASKS, not "
                f"{at_most_once!r}.",
                hint="The django.tasks backends outside sisy-pg's database that schedules may "
                "enqueue on, accepting at most once per instant; () by default.",
                id="sisy.E010",
            )
        )
    token = conf.settings.METRICS_TOKEN
    if token is not None and not (isinstance(token, str) and len(token) >= 16):
        messages.append(
            checks.Error(
                "SISY_METRICS_TOKEN must be None or a string of at least 16 characters.",
                hint="A secret for Authorization: Bearer <token> on /sisy/metrics; None: staff only.",
                id="sisy.E012",
            )
        )
    problem = conf.allowed_callables_problem(conf.settings.ALLOWED_CALLABLES)
    if problem:
        messages.append(
            checks.Error(
                problem + ".",
                hint="None (the default) allows the modules of your own INSTALLED_APPS.",
                id="sisy.E007",
            )
        )
    for name in conf.OBSOLETE:
        if hasattr(settings, name):
            messages.append(
                checks.Warning(
                    f"{name} is a setting of the original Sisy and is ignored: "
                    "sisy-pg has no heartbeat and no Channels, tasks fire at their instant.",
                    hint=f"Remove {name} from your settings.",
                    id="sisy.W001",
                )
            )
    return messages
