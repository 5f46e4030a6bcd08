"""Settings of the workers that tests/e2e/test_pgbouncer.py starts behind a PgBouncer.

``DATABASE_URL`` is the database through PgBouncer (procrastinate's jobs, the
runners, the callables); ``SISY_TEST_DIRECT_URL``, when set, is the same
database on PostgreSQL itself: the documented setup for transaction pooling
(docs/operations.md#connection-poolers), a second alias ``direct`` for the
LISTEN connections.
"""

import logging
import os

from devtools.embedded_pg import django_database
from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, LOGGING

# No server-side prepared statements: PgBouncer 1.18 in transaction mode sends
# each transaction to any server connection, where a statement prepared on
# another one does not exist. Django's backend already defaults to None with
# psycopg 3; said here because an integer would break every worker.
DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None

_direct_url = os.environ.get("SISY_TEST_DIRECT_URL")
if _direct_url:
    DATABASES["direct"] = django_database(_direct_url)
    SISY_LISTEN_DATABASE = "direct"


class ActionFormatter(logging.Formatter):
    """The time, level, logger and ``action`` of a record before its message, for assertions."""

    def format(self, record: logging.LogRecord) -> str:
        action = getattr(record, "action", "-")
        when = self.formatTime(record)
        return f"{when} {record.levelname} {record.name} [{action}] {super().format(record)}"


LOGGING = {
    **LOGGING,
    "formatters": {"action": {"()": ActionFormatter}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "action"}},
}
