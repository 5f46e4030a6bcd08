"""Fixtures of every tier: the test PostgreSQL, started only when a test needs it.

Importing the settings starts nothing (tests/settings.py): the session fixture
``database_server`` starts a throwaway PostgreSQL, unless DATABASE_URL is set,
the first time a test asks for a database, and exports DATABASE_URL to the
worker processes and projects the tests start.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools import embedded_pg, processes
from devtools.databases import empty_database

# SIGTERM and SIGHUP stop the session like Ctrl-C: fixtures tear down, workers
# and the embedded PostgreSQL stop, temporary files go.
processes.exit_on_signals()


@pytest.fixture(scope="session")
def database_server() -> str:
    """The URL of the test server: DATABASE_URL, else a throwaway PostgreSQL started now."""
    return embedded_pg.database_url()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    database_server: str, django_db_modify_db_settings_parallel_suffix: None
) -> None:
    """Point Django at the test server before pytest-django creates the test database."""
    from django.conf import settings

    settings.DATABASES["default"].update(embedded_pg.django_database(database_server))


@pytest.fixture
def fresh_url(database_server: str) -> Iterator[str]:
    """A new, empty database on the test server for a project run in a subprocess."""
    with empty_database(database_server, "sisy_fresh") as url:
        yield url


@pytest.fixture(scope="module")
def roles(django_db_setup, django_db_blocker) -> Iterator[dict[str, str]]:
    """sql/roles.sql's roles (names of this run), and a login member of each: {kind: its URL}."""
    from tests.helpers import current_database_url
    from tests.integration.helpers import recipe_roles

    with django_db_blocker.unblock():
        url = current_database_url()
    with recipe_roles(url) as urls:
        yield urls


@pytest.fixture
def admin_client(django_user_model):
    """A logged-in superuser named "admin" (pytest-django's own hashes a password: slow)."""
    from django.test import Client

    user = django_user_model.objects.create_superuser("admin", "admin@example.com", None)
    client = Client()
    client.force_login(user)
    return client
