"""The integration tier: a real PostgreSQL, in this process (see tests/README.md)."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _database_server(database_server: str) -> None:
    """Every test here has the test server, and DATABASE_URL names it."""
