"""The upgrade rule: the columns the Task and TaskRun models map are frozen at 0001_initial.

Sisy users' data migrations depend on ``('sisy', '0001_initial')`` only and save
the real Task model (``task_with_callable(...).save()``), so Django may run them
before a later sisy migration. A later release therefore adds functions,
constraints, indexes, views, unmapped columns and keys of the jsonb columns
``sisy_task.options`` / ``sisy_taskrun.details`` -- never a column the models map.

- a simulated later release (tests/later_release) whose seed migrations run, by
  Django's own plan, before its ``sisy.0002_later``: applied, unapplied, applied again;
- the negative control: the same seeds fail if a mapped column is not created by 0001;
- the guard a release breaking the rule trips: every mapped column is created by
  sql/migrations/0001_initial.sql, and no later migration changes the models' state.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import psycopg
import pytest
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings
from procrastinate.schema import SchemaManager

from devtools.databases import query
from devtools.workers import ROOT
from sisy_pg import sql_files
from sisy_pg.models import Task, TaskRun

SETTINGS = "tests.later_release.settings"
SEED = importlib.import_module("tests.later_release.aaa_seeds.migrations.0001_seed")
INSTANCE_SEED = importlib.import_module(
    "tests.later_release.aaa_seeds.migrations.0002_instance_method"
)
SEEDS = ["aaa_seeds.0001_seed", "aaa_seeds.0002_instance_method"]
LATER = "sisy.0002_later"
# Where new settings go instead of a new column.
JSONB_COLUMN = {Task: "Task.options", TaskRun: "TaskRun.details"}


def django(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m django ARGS`` in the simulated later release, against ``url``."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def applied(url: str) -> list[str]:
    """The migrations recorded in django_migrations, in the order they were applied."""
    return [
        name
        for (name,) in query(url, "SELECT app || '.' || name FROM django_migrations ORDER BY id")
    ]


def sisy_objects(url: str) -> list[tuple[str, str]]:
    """Every relation (table, view, index, sequence) and function named sisy_*."""
    return query(
        url,
        r"""
        SELECT 'relation', relname FROM pg_class
         WHERE relname LIKE 'sisy\_%' AND relnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'function', proname FROM pg_proc
         WHERE proname LIKE 'sisy\_%' AND pronamespace = 'public'::regnamespace
        ORDER BY 1, 2
        """,
    )


def assert_seeded_then_upgraded(url: str) -> None:
    order = [name for name in applied(url) if name.startswith(("sisy.", "aaa_seeds."))]
    # What makes this test prove anything: the seeds ran while the schema was
    # that of 0001_initial, before the later release's migration.
    assert order.index("sisy.0001_initial") < order.index(SEEDS[0]), order
    assert order.index(SEEDS[0]) < order.index(SEEDS[1]) < order.index(LATER), order

    tasks = {
        label: (func_path, schedule, options)
        for label, func_path, schedule, options in query(
            url,
            "SELECT label, callable_info ->> 'func_path', schedule, options FROM sisy_task",
        )
    }
    assert tasks == {
        SEED.TASK_NAME: ("tests.testapp.jobs.record", "30 0 * * *", {}),
        INSTANCE_SEED.TASK_NAME: (INSTANCE_SEED.METHOD_NAME, "* * * * *", {}),
    }
    ((widget_pk,),) = query(url, "SELECT id FROM testapp_widget")
    assert query(
        url,
        "SELECT (callable_info ->> 'model_pk')::bigint FROM sisy_task WHERE label = %s",
        [INSTANCE_SEED.TASK_NAME],
    ) == [(widget_pk,)]
    # The real model planned the seeded tasks when it saved them.
    assert query(url, "SELECT count(*) FROM sisy_task WHERE next_run IS NULL") == [(0,)]

    # What the later migration added is there, and works on the seeded rows.
    assert query(
        url,
        """
        SELECT to_regprocedure('sisy_example_v2(jsonb)') IS NOT NULL,
               to_regclass('sisy_taskrun_retried_idx') IS NOT NULL,
               to_regclass('sisy_task_timeouts') IS NOT NULL,
               EXISTS (SELECT 1 FROM pg_constraint
                        WHERE conname = 'sisy_task_options_timeout_is_number'),
               EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_name = 'sisy_taskrun' AND column_name = 'attempt')
        """,
    ) == [(True, True, True, True, True)]
    query(
        url,
        """UPDATE sisy_task SET options = options || '{"timeout": 30}' WHERE label = %s""",
        [SEED.TASK_NAME],
    )
    assert query(
        url, "SELECT timeout FROM sisy_task_timeouts WHERE label = %s", [SEED.TASK_NAME]
    ) == [(30,)]
    with pytest.raises(psycopg.errors.CheckViolation):
        query(url, """UPDATE sisy_task SET options = '{"timeout": "soon"}'""")


def test_seed_migrations_run_before_a_later_release_migration(fresh_url):
    django(fresh_url, "migrate", "--no-input")
    assert_seeded_then_upgraded(fresh_url)

    # The real models keep working on the later schema: the unmapped column
    # gets its default when the TaskRun model inserts a run.
    django(
        fresh_url,
        "shell",
        "-c",
        "from sisy.models import TaskRun, task_with_callable\n"
        "from tests.testapp.jobs import record\n"
        "task = task_with_callable(record, label='after 0002', schedule='* * * * *')\n"
        "task.save()\n"
        "TaskRun.objects.create(task=task, scheduled_for=task.next_run)\n",
    )
    assert query(
        fresh_url,
        "SELECT r.attempt FROM sisy_taskrun r JOIN sisy_task t ON t.id = r.task_id"
        " WHERE t.label = 'after 0002'",
    ) == [(1,)]
    query(fresh_url, "DELETE FROM sisy_task WHERE label = 'after 0002'")

    # Backwards: unapplying sisy unapplies the seeds (their reverse functions).
    output = django(fresh_url, "migrate", "sisy", "zero", "--no-input").stdout
    for name in [*SEEDS, LATER, "sisy.0001_initial"]:
        assert f"Unapplying {name}... OK" in output, output
    assert sisy_objects(fresh_url) == []
    assert [m for m in applied(fresh_url) if m.startswith(("sisy.", "aaa_seeds."))] == []
    # The instance-method seed's reverse deleted its row too.
    assert query(fresh_url, "SELECT count(*) FROM testapp_widget") == [(0,)]

    # And forwards again: repeatable, the same order.
    django(fresh_url, "migrate", "--no-input")
    assert_seeded_then_upgraded(fresh_url)


def test_a_mapped_column_added_after_0001_would_break_seed_migrations(fresh_url):
    """The negative control: what a release breaking the rule does to Sisy users.

    Simulates a release whose Task maps ``created_at`` but creates it only in
    its 0002: sisy.0001_initial applied, the column removed, then ``migrate``.
    Django runs the seed before sisy.0002, and the seed's save() fails.
    """
    django(fresh_url, "migrate", "sisy", "0001_initial", "--no-input")
    query(fresh_url, "ALTER TABLE sisy_task DROP COLUMN created_at")
    result = django(fresh_url, "migrate", "--no-input", check=False)
    assert result.returncode != 0, result.stdout
    assert result.stdout.rstrip().endswith(f"Applying {SEEDS[0]}..."), result.stdout
    assert 'column "created_at" of relation "sisy_task" does not exist' in result.stderr, (
        result.stderr
    )
    assert LATER not in applied(fresh_url)


def test_every_mapped_column_is_created_by_0001_initial(fresh_url):
    """The guard: a release that adds a mapped column fails here, with the reason."""
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())  # procrastinate's, which 0001 relies on
        conn.execute(sql_files.migration("0001_initial"))
    created = set(
        query(
            fresh_url,
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name LIKE 'sisy\\_%'",
        )
    )
    for model in (Task, TaskRun):
        table = model._meta.db_table
        for field in model._meta.concrete_fields:
            assert (table, field.column) in created, (
                f"{model.__name__} maps column {table}.{field.column} that 0001_initial does not "
                "create: a Sisy data migration depending only on 0001_initial would fail; put "
                f"new options in {JSONB_COLUMN[model]}"
            )


@pytest.mark.parametrize(
    "sisy_migrations", ["sisy_pg.migrations", "tests.later_release.sisy_migrations"]
)
def test_no_sisy_migration_after_0001_changes_the_models_state(sisy_migrations):
    """Django's view agrees: the models' state at sisy.0001_initial is the final one and the code's."""
    with override_settings(MIGRATION_MODULES={"sisy": sisy_migrations}):
        loader = MigrationLoader(None, ignore_no_migrations=True)
        at_0001 = loader.project_state(("sisy", "0001_initial"), at_end=True).apps
        final = loader.project_state().apps
    for model in (Task, TaskRun):

        def columns(apps, model=model):
            historical = apps.get_model("sisy", model.__name__)
            return sorted(field.column for field in historical._meta.concrete_fields)

        code = sorted(field.column for field in model._meta.concrete_fields)
        assert columns(at_0001) == code, (
            f"{model.__name__}'s fields differ from its state at sisy.0001_initial: a Sisy "
            "data migration depending only on 0001_initial would save columns that do not "
            f"exist yet; put new options in {JSONB_COLUMN[model]}"
        )
        assert columns(final) == code, (
            f"a sisy migration after 0001_initial changes {model.__name__}'s fields: a Sisy "
            "data migration depending only on 0001_initial may run before it; put new "
            f"options in {JSONB_COLUMN[model]}"
        )
