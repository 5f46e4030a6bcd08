"""Who changed a task, when, through what, and how: the audit of ``sisy_task``.

The database keeps it: a trigger on ``sisy_task`` records every change of a
task's definition, whoever the writer (the ORM, the admin, ``manage.py sisy``,
a migration, psql), in the append-only table ``sisy_task_change``, which the
view ``sisy_task_changes`` shows (docs/audit.md). The writer names itself in
PostgreSQL settings that the trigger reads:

- :func:`acting_as` sets ``sisy.actor`` and ``sisy.via`` for the rest of a
  transaction: the admin (``via="admin"``), ``manage.py sisy --as USER``
  (``"cli"``) and code that says who it acts for;
- every Django connection says ``via = "api"`` for its session (a
  ``connection_created`` receiver), and ``"migration"`` while ``migrate``
  runs (``pre_migrate`` / ``post_migrate``);
- any other session (psql, a script) is ``"sql"``, and a worker's own
  connections ``"worker"``; without an actor, the trigger names the
  session's database role and its ``application_name``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Iterator
from typing import Any

from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, pre_migrate

from . import limits

#: How each writer is named in ``via`` (the trigger says "sql" and "worker" itself).
VIA = ("admin", "cli", "api", "sql", "migration", "worker")

#: Changes that ``recent`` returns by default (``sisy show``, the admin's task page).
RECENT = 10

# The longest value a one-line description of a change shows.
_SHOWN = 60


@dataclasses.dataclass(frozen=True)
class Change:
    """A row of ``sisy_task_changes``: one change of one task (or a TRUNCATE of them all)."""

    id: int
    task_id: int | None
    label: str | None
    operation: str  # insert, update, delete, truncate
    changed_at: dt.datetime
    actor: str
    via: str
    db_role: str
    application_name: str
    changes: dict[str, dict[str, Any]]  # {column: {"old": ..., "new": ...}}

    def describe(self) -> str:
        """What changed, on one line: ``schedule '* * * * *' -> '*/5 * * * *'``."""
        if self.operation == "truncate":
            return "every task deleted (TRUNCATE)"
        if self.operation == "insert":
            return "created: " + _values(self.changes, "new")
        if self.operation == "delete":
            return "deleted: " + _values(self.changes, "old")
        return "; ".join(
            f"{column} {_short(change['old'])} -> {_short(change['new'])}"
            for column, change in sorted(self.changes.items())
        )

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it copies the changes recursively, and a document
        # written before sisy's limits may nest deeper than Python recurses.
        document = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        document["changed_at"] = self.changed_at.astimezone(dt.timezone.utc).isoformat()
        return document


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except RecursionError:  # a document written before sisy's limits
        return "<nested too deep to show>"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


@functools.cache
def _defaults() -> dict[str, Any]:
    """What a task created without saying otherwise holds (the model's defaults of the
    settings a description lists): not worth a word in it."""
    from .models import Task

    listed = ("enabled", "iterations", "wait_for_schedule", "allow_overlap", "userdata", "options")
    return {
        field.name: field.get_default()
        for field in Task._meta.concrete_fields
        if field.name in listed
    }


def _values(changes: dict[str, dict[str, Any]], side: str) -> str:
    """A whole definition, short: its schedule, zone and callable, then what is not the default."""
    values = {column: change.get(side) for column, change in changes.items()}
    callable_info = values.get("callable_info")
    parts = [
        f"schedule {_short(values.get('schedule'))} ({values.get('timezone')})",
        str(callable_info.get("func_path") if isinstance(callable_info, dict) else callable_info),
    ]
    parts += [
        f"{column} {_short(value)}"
        for column, value in sorted(values.items())
        if column not in ("label", "schedule", "timezone", "callable_info")
        and value != _defaults().get(column)
    ]
    return ", ".join(parts)


def _database(using: str | None) -> str:
    from .models import Task

    return using or router.db_for_write(Task)


def actor_name(user: Any) -> str:
    """The name a change is recorded under: a user's username, a string as it is."""
    if user is None:
        return ""
    if isinstance(user, str):
        return user
    if not getattr(user, "is_authenticated", True):
        return ""  # AnonymousUser: the role and application_name say who
    return str(user.get_username())


@contextlib.contextmanager
def acting_as(user: Any = None, via: str = "api", using: str | None = None) -> Iterator[None]:
    """Record the changes to tasks made inside as ``user``'s, made through ``via``.

    ``user`` is a Django user (recorded by its username), a name, or None (the
    trigger names the database role and ``application_name``); ``via`` one of
    :data:`VIA` or a word of your own. A transaction on ``using`` (the Task
    model's database by default) is opened, or a savepoint in the current
    one: the settings are transaction-local (``set_config(..., true)``), so
    they end with it, and an enclosing transaction gets its own back when
    the block ends.
    """
    if not isinstance(via, str) or not via.strip():
        raise ValueError(f"via must be a non-empty string, e.g. one of {VIA}, not {via!r}")
    alias = _database(using)
    connection = connections[alias]
    enclosed = connection.in_atomic_block or not connection.get_autocommit()
    with transaction.atomic(using=alias):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(current_setting('sisy.actor', true), ''),"
                " coalesce(current_setting('sisy.via', true), ''),"
                " set_config('sisy.actor', %s, true), set_config('sisy.via', %s, true)",
                [actor_name(user), via],
            )
            previous = cursor.fetchone()[:2]
        yield
        if enclosed and not connection.needs_rollback:
            # The enclosing transaction goes on: its own writer again.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('sisy.actor', %s, true), set_config('sisy.via', %s, true)",
                    previous,
                )


def recent(task_id: int, limit: int = RECENT, using: str | None = None) -> list[Change]:
    """The task's latest changes, newest first."""
    with connections[_database(using)].cursor() as cursor:
        cursor.execute(
            "SELECT id, task_id, label, operation, changed_at, actor, via, db_role,"
            " application_name, changes, ARRAY(SELECT jsonb_object_keys(changes))"
            " FROM sisy_task_changes"
            " WHERE task_id = %s ORDER BY id DESC LIMIT %s",
            [task_id, limit],
        )
        return [
            Change(
                id=row[0],
                task_id=row[1],
                label=row[2],
                operation=row[3],
                changed_at=row[4],
                actor=row[5],
                via=row[6],
                db_role=row[7],
                application_name=row[8],
                changes=_readable(row[9], row[10]),
            )
            for row in cursor.fetchall()
        ]


def _readable(stored: Any, columns: list[str]) -> dict[str, dict[str, Any]]:
    """The changes as stored; a document too deep for Python's parser (a row written before
    sisy's limits) as its columns, each old and new named unreadable, never a RecursionError."""
    document = limits.loads(stored) if isinstance(stored, str) else stored
    if isinstance(document, limits.UnreadableJSON):
        unreadable = str(document)
        return {column: {"old": unreadable, "new": unreadable} for column in columns}
    changes: dict[str, dict[str, Any]] = document
    return changes


# --- the session's writer, for changes made without acting_as -----------------------------


def _say(connection: BaseDatabaseWrapper, via: str) -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('sisy.via', %s, false)", [via])


def _connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """A Django connection's changes are the application's (``via = 'api'``), not psql's.

    Only on the database sisy's tables are written to: the project's other databases pay
    no statement per connection for an audit they do not hold."""
    if connection.alias == _database(None):
        _say(connection, "api")


def _pre_migrate(sender: Any, using: str, **kwargs: Any) -> None:
    _say(connections[using], "migration")


def _post_migrate(sender: Any, using: str, **kwargs: Any) -> None:
    _say(connections[using], "api")


def connect() -> None:
    """Connect the receivers that name Django's sessions (``SisyConfig.ready``)."""
    from django.apps import apps

    sisy = apps.get_app_config("sisy")
    connection_created.connect(_connection_created, dispatch_uid="sisy_pg.audit.connection")
    # Sent once per migrate for this app, before any migration and after all.
    pre_migrate.connect(_pre_migrate, sender=sisy, dispatch_uid="sisy_pg.audit.pre_migrate")
    post_migrate.connect(_post_migrate, sender=sisy, dispatch_uid="sisy_pg.audit.post_migrate")
