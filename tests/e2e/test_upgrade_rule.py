"""The upgrade rule: the columns the Task and TaskRun models map are frozen at 0001_initial.

Sisy users' data migrations depend on ``('sisy', '0001_initial')`` only and save
the real Task model (``task_with_callable(...).save()``), so Django may run them
before a later sisy migration. A later release therefore adds functions,
constraints, indexes, views, unmapped columns and keys of the jsonb columns
``sisy_task.options`` / ``sisy_taskrun.details`` -- never a column the models map.

- a database made by release 0.1.0 (its package, taken from the tag v0.1.0 where git
  has it), with seed migrations and a history, migrated to the head: its rows kept, the operators' names working on them; 0002 unapplied and
  applied again;
- a simulated later release (tests/later_release) whose seed migrations run, by
  Django's own plan, before its ``sisy.0003_later``: applied, unapplied, applied again;
- the negative control: the same seeds fail if a mapped column is not created by 0001;
- the guard a release breaking the rule trips: every mapped column is created by
  sql/migrations/0001_initial.sql, and no later migration changes the models' state.
"""

from __future__ import annotations

import importlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import psycopg
import pytest
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings
from procrastinate.schema import SchemaManager

from devtools.databases import query
from devtools.workers import ROOT
from sisy_pg import sql_files
from sisy_pg.models import Task, TaskRun
from tests.integration.helpers import assert_same_catalog, catalog, schema_database

SETTINGS = "tests.later_release.settings"
# sisy's migrations in each release (tests/later_release/__init__.py).
RELEASED_0_1_0 = "tests.later_release.sisy_migrations_0_1_0"
HEAD = "sisy_pg.migrations"
SIMULATED_LATER = "tests.later_release.sisy_migrations"
SEED = importlib.import_module("tests.later_release.aaa_seeds.migrations.0001_seed")
INSTANCE_SEED = importlib.import_module(
    "tests.later_release.aaa_seeds.migrations.0002_instance_method"
)
SEEDS = ["aaa_seeds.0001_seed", "aaa_seeds.0002_instance_method"]
OPERATOR_NAMES = "sisy.0002_operator_names"
LATER = "sisy.0003_later"
# Where new settings go instead of a new column.
JSONB_COLUMN = {Task: "Task.options", TaskRun: "TaskRun.details"}


def django(
    url: str,
    *args: str,
    check: bool = True,
    release: str = SIMULATED_LATER,
    package: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m django ARGS`` in the project on ``release``'s migrations, against ``url``;
    sisy-pg's packages from the folder ``package`` if given, else from the checkout."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "SISY_MIGRATIONS": release,
        "PYTHONPATH": os.pathsep.join(str(folder) for folder in (package, ROOT) if folder),
    }
    result = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=package or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def release_0_1_0(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path | None]:
    """How to run a project on release 0.1.0: (its sisy migrations, the folder of its packages).

    Where git has the tag v0.1.0 (a clone), its sisy_pg, sisy and sql folders, as released;
    elsewhere (an sdist) its migration files, frozen by sql/migrations/RELEASED.sha256, beside
    the checkout's code.
    """
    git = shutil.which("git")
    if (
        not git
        or subprocess.run(
            [git, "rev-parse", "--verify", "--quiet", "v0.1.0^{commit}"],
            cwd=ROOT,
            capture_output=True,
        ).returncode
    ):
        return RELEASED_0_1_0, None
    archive = subprocess.run(
        [git, "archive", "--format=tar", "v0.1.0", "sisy_pg", "sisy", "sql"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    folder = tmp_path_factory.mktemp("sisy-pg-0.1.0")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return HEAD, folder


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
    assert order.index(SEEDS[0]) < order.index(SEEDS[1]) < order.index(OPERATOR_NAMES), order
    assert order.index(OPERATOR_NAMES) < order.index(LATER), order

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


def rows_of_every_table(url: str) -> dict[str, list[str]]:
    """Every row of sisy's tables and of procrastinate's jobs, as text, sorted."""
    tables = query(
        url,
        r"""SELECT relname FROM pg_class
             WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
               AND (relname LIKE 'sisy\_%' OR relname = 'procrastinate_jobs')
             ORDER BY 1""",
    )
    return {
        table: sorted(row for (row,) in query(url, f"SELECT to_jsonb(t)::text FROM {table} AS t"))
        for (table,) in tables
    }


def sisy_catalog(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return catalog(conn)


def make_history(url: str) -> None:
    """What a 0.1.0 cluster leaves: runs fired and run, a task from psql, a pause, a backfill.

    Written through the functions 0.1.0's planner and runner call
    (sisy_store_decisions_v1, sisy_start_run_v1, sisy_finish_run_v1) and its psql ones.
    """
    ((seed_id,),) = query(url, "SELECT id FROM sisy_task WHERE label = %s", [SEED.TASK_NAME])

    def decide(status: str, seconds_ago: int, details: str = "{}") -> int:
        query(
            url,
            """SELECT sisy_store_decisions_v1(
                   'sisy', 'sisy.run', ARRAY[%(task)s]::bigint[],
                   ARRAY[date_trunc('second', now()) - make_interval(secs => %(ago)s)],
                   ARRAY[%(status)s], ARRAY[''], ARRAY[%(details)s::jsonb],
                   ARRAY[%(task)s]::bigint[], ARRAY[now() + interval '1 day'], ARRAY[false],
                   ARRAY[''], 1)""",
            {"task": seed_id, "ago": seconds_ago, "status": status, "details": details},
        )
        ((run_id,),) = query(url, "SELECT max(id) FROM sisy_taskrun")
        return run_id

    for outcome, seconds_ago in [("succeeded", 9), ("failed", 6)]:
        run_id = decide("queued", seconds_ago)
        ((job_id,),) = query(url, "SELECT job_id FROM sisy_taskrun WHERE id = %s", [run_id])
        started = query(
            url,
            "SELECT status FROM sisy_start_run_v1(%s, %s, 'host:1:w', '30 seconds', '60 seconds')",
            [run_id, job_id],
        )
        assert started == [("running",)], started
        query(
            url,
            "SELECT sisy_finish_run_v1(%s, %s, %s, %s, 'sisy', 'sisy.run')",
            [run_id, outcome, "" if outcome == "succeeded" else "ValueError: x", ""],
        )
    decide("missed", 12, '{"reason": "missed", "policy": "coalesce"}')
    decide("queued", 3)  # its job waits
    query(
        url,
        """INSERT INTO sisy_task (label, callable_info, schedule, timezone) VALUES
             ('From psql', '{"func_path": "tests.testapp.jobs.record"}', '0 * * * *', 'UTC'),
             ('Broken', '{"func_path": "gone.module.job"}', '0 * * * *', 'UTC')""",
    )
    query(url, "UPDATE sisy_task SET error = 'module gone' WHERE label = 'Broken'")
    query(
        url,
        "SELECT sisy_pause_v2(%s, 'paused at 0.1.0', now() + interval '1 day')",
        [INSTANCE_SEED.TASK_NAME],
    )
    query(url, "SELECT sisy_backfill_v1('From psql', now() - interval '3 hours', now())")
    query(
        url,
        "SELECT sisy_worker_seen_v1(w.worker_id, 'host:1:w', NULL, true, 4, 0, 0, 'ok', '{}')"
        " FROM procrastinate_register_worker_v1() AS w",
    )


def test_a_database_made_by_0_1_0_upgrades_to_the_head(fresh_url, database_server, release_0_1_0):
    """Release 0.1.0's migrations and a Sisy project's seeds, a history, then the head's."""
    migrations, package = release_0_1_0
    if package:  # the project really runs the released package
        version = django(
            fresh_url,
            "shell",
            "-c",
            "import sisy_pg; print(sisy_pg.__version__)",
            release=migrations,
            package=package,
        ).stdout.split()[-1]
        assert version == "0.1.0", version
    django(fresh_url, "migrate", "--no-input", release=migrations, package=package)
    at_0_1_0 = [m for m in applied(fresh_url) if m.startswith(("sisy.", "aaa_seeds."))]
    assert at_0_1_0 == ["sisy.0001_initial", *SEEDS], at_0_1_0
    make_history(fresh_url)
    # An operator role as 0.1.0's sql/roles.sql made it: the versions, granted.
    operator = f"sisy_upgrade_operator_{uuid.uuid4().hex[:8]}"
    query(fresh_url, f'CREATE ROLE "{operator}"')
    try:
        query(
            fresh_url,
            "GRANT EXECUTE ON FUNCTION sisy_pause_v2(text, text, timestamptz),"
            f' sisy_health_v1(interval, interval, interval) TO "{operator}"',
        )
        upgrades_keeping_every_row(fresh_url, database_server, operator)
    finally:
        query(fresh_url, f'DROP OWNED BY "{operator}"')
        query(fresh_url, f'DROP ROLE "{operator}"')


def upgrades_keeping_every_row(fresh_url: str, database_server: str, operator: str) -> None:
    """The rest of the test above: the upgrade, the names at work, 0002 unapplied and again."""
    made = rows_of_every_table(fresh_url)
    written = ("sisy_task", "sisy_taskrun", "sisy_task_pause", "sisy_backfill", "sisy_worker")
    assert [len(made[table]) for table in written] == [4, 4, 1, 1, 1], made
    assert made["sisy_task_change"] and made["sisy_metric_delta"] and made["procrastinate_jobs"]

    # Upgraded: 0002 alone applied, every row kept, the schema that of schema.sql.
    output = django(fresh_url, "migrate", "--no-input", release=HEAD).stdout
    assert f"Applying {OPERATOR_NAMES}... OK" in output and output.count("Applying") == 1, output
    assert rows_of_every_table(fresh_url) == made
    with schema_database(database_server, sql_files.read("schema.sql")) as head:
        assert_same_catalog(sisy_catalog(fresh_url), catalog(head))
    # A role given a version got the name that calls it, and no other.
    may_call = {
        name: query(
            fresh_url, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", [operator, name]
        )[0][0]
        for name in (
            "sisy_pause(text, text, timestamptz)",
            "sisy_health(interval, interval, interval)",
            "sisy_run_now(text)",
            "sisy_metrics(interval)",
        )
    }
    assert list(may_call.values()) == [True, True, False, False], may_call

    # The operators' names act on what 0.1.0 made.
    names = {
        "sisy_resume": INSTANCE_SEED.TASK_NAME,  # paused with a note and an end at 0.1.0
        "sisy_pause": SEED.TASK_NAME,  # cancels its queued run and that run's job
        "sisy_clear_error": "Broken",
        "sisy_run_now": "From psql",
    }
    for function, label in names.items():
        assert query(fresh_url, f"SELECT label, done FROM {function}(%s)", [label]) == [
            (label, True)
        ], function
    assert query(
        fresh_url,
        "SELECT refusal FROM sisy_backfill('From psql', now() - interval '1 hour', now())",
    ) == [(None,)]
    assert query(
        fresh_url,
        "SELECT pause_note FROM sisy_task_status WHERE label = %s",
        [INSTANCE_SEED.TASK_NAME],
    ) == [(None,)]
    assert query(
        fresh_url,
        "SELECT r.status, j.status FROM sisy_taskrun AS r JOIN procrastinate_jobs AS j"
        " ON j.id = r.job_id WHERE r.scheduled_for = (SELECT max(scheduled_for) FROM sisy_taskrun)",
    ) == [("cancelled", "cancelled")]
    # The metrics count the runs 0.1.0 finished, as the history has them.
    assert query(
        fresh_url,
        "SELECT labels ->> 'status', sum(value)::integer FROM sisy_metrics()"
        " WHERE metric = 'runs_total' GROUP BY 1 ORDER BY 1",
    ) == query(
        fresh_url,
        "SELECT status, count(*)::integer FROM sisy_taskrun WHERE status <> 'queued'"
        " GROUP BY 1 ORDER BY 1",
    )
    assert ("broken", True) in query(fresh_url, "SELECT check_name, ok FROM sisy_health()")
    used = rows_of_every_table(fresh_url)

    # Unapplied: the names and the descriptions go, the rows stay, the schema is 0.1.0's.
    output = django(fresh_url, "migrate", "sisy", "0001_initial", "--no-input", release=HEAD).stdout
    assert f"Unapplying {OPERATOR_NAMES}... OK" in output and output.count("Unapplying") == 1
    assert rows_of_every_table(fresh_url) == used
    with schema_database(database_server, sql_files.migration("0001_initial")) as released:
        # 0001_initial describes nothing: compared whole, without the check that each kind has rows.
        assert sisy_catalog(fresh_url) == catalog(released)

    # Applied again.
    output = django(fresh_url, "migrate", "--no-input", release=HEAD).stdout
    assert f"Applying {OPERATOR_NAMES}... OK" in output and output.count("Applying") == 1
    assert rows_of_every_table(fresh_url) == used
    with schema_database(database_server, sql_files.read("schema.sql")) as head:
        assert_same_catalog(sisy_catalog(fresh_url), catalog(head))
    assert query(fresh_url, "SELECT done FROM sisy_resume(%s)", [SEED.TASK_NAME]) == [(True,)]


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
    for name in [*SEEDS, LATER, OPERATOR_NAMES, "sisy.0001_initial"]:
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
    a later migration: sisy.0001_initial applied, the column removed, then
    ``migrate``. Django runs the seed before sisy's later migrations, and the
    seed's save() fails.
    """
    django(fresh_url, "migrate", "sisy", "0001_initial", "--no-input")
    query(fresh_url, "ALTER TABLE sisy_task DROP COLUMN created_at")
    result = django(fresh_url, "migrate", "--no-input", check=False)
    assert result.returncode != 0, result.stdout
    assert result.stdout.rstrip().endswith(f"Applying {SEEDS[0]}..."), result.stdout
    assert 'column "created_at" of relation "sisy_task" does not exist' in result.stderr, (
        result.stderr
    )
    assert OPERATOR_NAMES not in applied(fresh_url) and LATER not in applied(fresh_url)


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


@pytest.mark.parametrize("sisy_migrations", [HEAD, SIMULATED_LATER])
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
