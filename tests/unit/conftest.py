"""The unit tier: no database, no processes (see tests/README.md)."""

import pytest

NO_DATABASE = "unit tests have no database: a test that needs one belongs in tests/integration"


@pytest.fixture(scope="session")
def database_server() -> str:
    pytest.fail(NO_DATABASE)


@pytest.fixture(scope="session")
def django_db_setup() -> None:
    pytest.fail(NO_DATABASE)
