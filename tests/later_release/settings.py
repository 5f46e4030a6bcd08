"""A project on a simulated later release of sisy-pg (see this package's docstring).

The database is ``DATABASE_URL``, as given (tests create a fresh one per test).
"""

import os

from devtools.embedded_pg import django_database

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Europe/Paris"
DATABASES = {"default": django_database(os.environ["DATABASE_URL"])}
INSTALLED_APPS = [
    "procrastinate.contrib.django",
    "sisy_pg",
    "tests.testapp",
    "tests.later_release.aaa_seeds",
]
MIGRATION_MODULES = {"sisy": "tests.later_release.sisy_migrations"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
