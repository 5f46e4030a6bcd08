"""The SQL files: the migrations add up to schema.sql, and the tables are what the models say."""

from __future__ import annotations

import pytest
from django.db import connection

from sisy_pg import sql_files
from sisy_pg.models import Task, TaskRun
from tests.integration.helpers import CATALOG, assert_same_catalog, catalog, schema_database

SISY_TABLES = ("sisy_task", "sisy_taskrun")


def test_migration_files_add_up_to_schema_sql(database_server):
    migrations = [sql_files.migration(name) for name in sql_files.migration_names()]
    assert migrations, "no migration file found"
    with (
        schema_database(database_server, *migrations) as migrated,
        schema_database(database_server, sql_files.read("schema.sql")) as from_schema,
    ):
        assert_same_catalog(catalog(migrated), catalog(from_schema))


@pytest.mark.django_db
def test_django_migrations_build_the_schema_of_schema_sql(database_server):
    """The test database was built by `migrate`; it must equal schema.sql."""
    with connection.cursor() as cursor:
        django_built = {}
        for kind, query in CATALOG.items():
            cursor.execute(query)
            django_built[kind] = cursor.fetchall()
    with schema_database(database_server, sql_files.read("schema.sql")) as from_schema:
        assert_same_catalog(django_built, catalog(from_schema))


def test_every_migration_file_has_its_reverse_and_a_django_migration():
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    django_names = sorted(name for app, name in loader.disk_migrations if app == "sisy")
    for name in sql_files.migration_names():
        assert sql_files.reverse_migration(name).strip(), name
        assert name in django_names, f"sql/migrations/{name}.sql has no Django migration"


def test_reverse_of_every_migration_leaves_nothing(database_server):
    names = sql_files.migration_names()
    forwards = [sql_files.migration(name) for name in names]
    backwards = [sql_files.reverse_migration(name) for name in reversed(names)]
    with schema_database(database_server, *forwards, *backwards) as conn:
        left = {kind: rows for kind, rows in catalog(conn).items() if rows}
        assert left == {}


def _table_shape(cursor, schema: str) -> dict[str, object]:
    cursor.execute(
        """
        SELECT table_name, column_name, data_type, character_maximum_length,
               is_nullable, is_identity
          FROM information_schema.columns
         WHERE table_schema = %s AND table_name = ANY(%s)
         ORDER BY 1, 2""",
        [schema, list(SISY_TABLES)],
    )
    columns = cursor.fetchall()
    cursor.execute(
        """
        SELECT t.relname, c.contype,
               array(SELECT a.attname FROM unnest(c.conkey) AS k
                       JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = k
                      ORDER BY 1),
               coalesce(target.relname, '')
          FROM pg_constraint AS c
          JOIN pg_class AS t ON t.oid = c.conrelid
          LEFT JOIN pg_class AS target ON target.oid = c.confrelid
         WHERE c.connamespace = %s::regnamespace AND c.contype IN ('p', 'f', 'u')
           AND t.relname = ANY(%s)
         ORDER BY 1, 2, 3""",
        [schema, list(SISY_TABLES)],
    )
    keys = [(table, kind, tuple(cols), target) for table, kind, cols, target in cursor.fetchall()]
    return {"columns": columns, "keys": keys}


@pytest.mark.django_db
def test_sql_tables_are_what_django_makes_of_the_models():
    """Django's state (the models) and the SQL files describe the same tables."""
    with connection.cursor() as cursor:
        from_sql = _table_shape(cursor, current := "public")
        cursor.execute("CREATE SCHEMA sisy_from_models")
        cursor.execute("SET LOCAL search_path TO sisy_from_models")
        with connection.schema_editor() as editor:
            editor.create_model(Task)
            editor.create_model(TaskRun)
        from_models = _table_shape(cursor, "sisy_from_models")
        cursor.execute(f"SET LOCAL search_path TO {current}")
    assert from_sql["columns"] and from_sql["keys"]
    assert from_sql == from_models


@pytest.mark.django_db  # makemigrations reads the migration history
def test_the_migrations_state_is_the_models():
    """A model change without its migration (state and SQL file) is caught here."""
    from django.core.management import call_command

    call_command("makemigrations", "sisy", "--check", "--dry-run", verbosity=0)
