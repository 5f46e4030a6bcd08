"""A project on sisy-pg with Sisy-style data migrations (see this package's docstring).

The database is ``DATABASE_URL``, as given (tests create a fresh one per test);
sisy's migrations are the module ``SISY_MIGRATIONS`` names: by default the
simulated later release's.
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
MIGRATION_MODULES = {
    "sisy": os.environ.get("SISY_MIGRATIONS", "tests.later_release.sisy_migrations")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
