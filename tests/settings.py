"""Settings for the test suite and its worker processes: a real PostgreSQL at DATABASE_URL.

Importing them starts and connects to nothing. The test session sets
DATABASE_URL when a test needs PostgreSQL (tests/conftest.py starts a throwaway
server unless it is set) and its worker processes inherit it.
"""

import importlib.util
import os

from devtools.embedded_pg import django_database

# A database no connection can reach: DATABASE_URL unset, or the unit tests'.
NO_SERVER = "host=/nonexistent dbname=no_server"

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Europe/Paris"
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": django_database(os.environ.get("DATABASE_URL", NO_SERVER))}
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "procrastinate.contrib.django",
    "sisy_pg",
    "tests.testapp",
]
# django-tasks-db (Django 5.2+) where it is installed: the other database backend of
# django.tasks that recurring tasks are tried with (tests/e2e/test_django_tasks_e2e.py).
HAS_TASKS_DB = importlib.util.find_spec("django_tasks_db") is not None
if HAS_TASKS_DB:
    INSTALLED_APPS.append("django_tasks_db")
# django.tasks (Django 6) or its backport (django_tasks) reads the same setting.
TASKS = {
    "default": {"BACKEND": "sisy_pg.django_tasks.ProcrastinateBackend", "QUEUES": []},
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    "dummy": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"},
}
if importlib.util.find_spec("django.tasks") is None:  # Django < 6: the backport's own backends
    for alias in ("immediate", "dummy"):
        TASKS[alias]["BACKEND"] = TASKS[alias]["BACKEND"].replace("django.tasks", "django_tasks")
# Backends outside sisy's database that a test's workers accept (test_django_tasks_e2e.py).
SISY_AT_MOST_ONCE_BACKENDS = tuple(
    filter(None, os.environ.get("SISY_TEST_AT_MOST_ONCE", "").split(","))
)
if HAS_TASKS_DB:
    TASKS["db"] = {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Workers started by the end-to-end tests: poll rarely, so that firing on time
# is shown to come from sisy's planner and procrastinate's LISTEN/NOTIFY.
PROCRASTINATE_WORKER_DEFAULTS = {"fetch_job_polling_interval": 5.0}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "sisy_pg": {"handlers": ["console"], "level": "INFO"},
        "procrastinate": {"handlers": ["console"], "level": "WARNING"},
    },
}
