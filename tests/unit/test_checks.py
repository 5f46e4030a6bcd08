"""System checks for misconfiguration."""

import pytest
from django.core import checks
from django.test import override_settings

from sisy_pg import checks as sisy_checks


def ids(messages):
    return [m.id for m in messages]


def test_default_configuration_is_clean():
    assert sisy_checks.check_settings() == []
    assert sisy_checks.check_installed_apps() == []
    assert sisy_checks.check_database() == []


@pytest.mark.parametrize(
    ("settings", "check_id"),
    [
        ({"SISY_DEFAULT_SCHEDULE": "* * *"}, "sisy.E003"),
        ({"SISY_DEFAULT_TIMEZONE": "Nowhere/Land"}, "sisy.E004"),
        ({"USE_TZ": False}, "sisy.E005"),
        ({"SISY_GRACE": -1}, "sisy.E006"),
        ({"SISY_MISSED_ALL_LIMIT": 0}, "sisy.E006"),
        ({"SISY_PLANNER_MAX_SLEEP": "soon"}, "sisy.E006"),
        ({"SISY_RUN_RETENTION_DAYS": 0}, "sisy.E006"),
        ({"SISY_ALLOWED_CALLABLES": "myapp"}, "sisy.E007"),
        ({"SISY_TASK_SLOTS": 0}, "sisy.E006"),
        ({"SISY_POLL_INTERVAL": 0}, "sisy.E006"),
        ({"SISY_LISTEN_DATABASE": "direkt"}, "sisy.E009"),
        ({"SISY_AT_MOST_ONCE_BACKENDS": "dummy"}, "sisy.E010"),
        ({"SISY_AT_MOST_ONCE_BACKENDS": ["nowhere"]}, "sisy.E010"),
        ({"SISY_METRICS_TOKEN": "short"}, "sisy.E012"),
        ({"SISY_BACKFILL_LIMIT": 0}, "sisy.E006"),
        ({"SISY_ALLOWED_CALLABLES": ["myapp", ""]}, "sisy.E007"),
        ({"SISY_ALLOWED_CALLABLES": ["my app"]}, "sisy.E007"),
        ({"SISY_ALLOWED_CALLABLES": [42]}, "sisy.E007"),
        ({"SISY_HEARTBEAT_FREQUENCY": 60}, "sisy.W001"),
        ({"SISY_TICK_FREQUENCY": 1}, "sisy.W001"),
        ({"SISY_RUN_TASK_CHANNEL": "sisy-run"}, "sisy.W001"),
    ],
)
def test_misconfiguration_is_reported(settings, check_id):
    with override_settings(**settings):
        assert check_id in ids(sisy_checks.check_settings())


@pytest.mark.parametrize("value", [None, [], ["myapp"], ("myapp.tasks", "other_app")])
def test_allowed_callables_may_be_none_or_a_list_of_module_names(value):
    with override_settings(SISY_ALLOWED_CALLABLES=value):
        assert "sisy.E007" not in ids(sisy_checks.check_settings())


def test_non_postgres_database_is_an_error():
    assert ids(sisy_checks.database_errors("default", "django.db.backends.sqlite3")) == [
        "sisy.E002"
    ]


@pytest.mark.parametrize(
    ("apps", "errors"),
    [
        (["procrastinate.contrib.django", "sisy_pg"], []),
        (["sisy_pg", "procrastinate.contrib.django"], ["sisy.E001"]),
        (["sisy_pg"], ["sisy.E001"]),
    ],
)
def test_procrastinate_app_must_come_first(apps, errors):
    assert ids(sisy_checks.app_order_errors(apps)) == errors


def test_checks_are_registered():
    assert sisy_checks.check_settings in checks.registry.registry.get_checks()
