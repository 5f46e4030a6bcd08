"""Settings of the unit tests: tests.settings (sisy_pg's apps and models), no database server.

Importing them starts and connects to nothing, whatever DATABASE_URL says; a
unit test that reaches for the database fails (see tests/unit/conftest.py).
"""

from devtools.embedded_pg import django_database
from tests.settings import *  # noqa: F403
from tests.settings import NO_SERVER

DATABASES = {"default": django_database(NO_SERVER)}
