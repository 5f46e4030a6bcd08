"""Helpers of the tests with a database: the integration tests, and the end-to-end ones beside them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import io
import itertools
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import override_settings
from procrastinate.schema import SchemaManager
from prometheus_client.parser import text_string_to_metric_families
from psycopg import errors
from psycopg.conninfo import make_conninfo

from devtools.databases import empty_database, query
from devtools.embedded_pg import find_bindir
from sisy_pg import (
    callables,
    metrics,
    planner,
    procrastinate_seam,
    sql_files,
    store,
    tasks_framework,
    worker,
)
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.testapp import backend_tasks, jobs

# --- Tasks and rows, on Django's connection -----------------------------------------------


QUERIES = sql_files.queries()


def sql(query, params=None):
    """Run ``query`` on Django's connection; its rows, if any."""
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


_numbers = itertools.count(1)


FAR_AWAY = "0 0 1 1 *"  # once a year


def saved_task(the_callable=jobs.record, *, label=None, schedule=FAR_AWAY, **fields):
    """A saved task of ``the_callable``: labelled ``label``, else "task N" (labels are unique)."""
    task = task_with_callable(
        the_callable, label=label or f"task {next(_numbers)}", schedule=schedule
    )
    for name, value in fields.items():
        setattr(task, name, value)
    task.save()
    return task


def make_task(schedule="* * * * *", **fields):
    """A saved task of jobs.record, every minute unless told."""
    return saved_task(schedule=schedule, **fields)


def one_off(func, label, options=None, userdata=None, pk_override=None):
    task = task_with_callable(func, label=label, userdata=userdata, pk_override=pk_override)
    task.options = options or {}
    task.iterations = 1
    task.wait_for_schedule = False
    task.save()
    return task


RECORD = json.dumps(callables.describe(jobs.record))


def insert_tasks(count, *, schedule="* * * * *", next_run="NULL", options="{}", label="flood"):
    """``count`` tasks in one statement (as a bulk_create would); their ids."""
    return [
        task_id
        for (task_id,) in sql(
            f"""INSERT INTO sisy_task (label, callable_info, schedule, timezone, options, next_run)
                SELECT %s || ' ' || i, %s::jsonb, %s, 'UTC', %s::jsonb, {next_run}
                  FROM generate_series(1, %s) AS i
             RETURNING id""",
            [f"{label} {time.monotonic_ns()}", RECORD, schedule, options, count],
        )
    ]


def make_due(task):
    sql(
        "UPDATE sisy_task SET next_run = clock_timestamp() - interval '1 ms' WHERE id = %s",
        [task.pk],
    )


def pause_of(task):
    return Task.objects.with_status().get(pk=task.pk).pause_info


def changes_of(task_id: int) -> list[tuple[str, str, str, dict]]:
    """(operation, actor, via, changes) of each recorded change of the task, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT operation, actor, via, changes FROM sisy_task_changes"
            " WHERE task_id = %s ORDER BY changed_at, id",
            [task_id],
        )
        return [
            (operation, actor, via, json.loads(changes) if isinstance(changes, str) else changes)
            for operation, actor, via, changes in cursor.fetchall()
        ]


# --- The planner, in this process ---------------------------------------------------------


def run_planner(method, *args):
    """Run ``Planner.<method>`` on its own connection, as in a worker."""

    async def go():
        planner = worker.make_planner(
            procrastinate_seam.WorkerOptions(queues=None, stalled_worker_timeout=30)
        )
        conn = await planner.store.connect()
        try:
            return await getattr(planner, method)(conn, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def claim(lead=dt.timedelta(0), runs_per_job=1):
    """One planner step on Django's connection: claim, decide, record (as Planner.fire_due)."""
    with connection.cursor() as cursor:
        cursor.execute(
            QUERIES["claim_due"],
            {"limit": 100, "lead": lead, "stalled_after": dt.timedelta(seconds=30)},
        )
        columns = [column.name for column in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        # Django's connection leaves jsonb as text; the planner's psycopg one loads it.
        claimed = [store.due_from_row({**r, "options": json.loads(r["options"])}) for r in rows]
        # The planner's own steps between its two statements (Planner.fire_due).
        decisions = planner._decide_all(claimed, lead=lead, all_limit=100)
        records, plans = planner._records_and_plans(claimed, decisions)
        cursor.execute(
            QUERIES["store_decisions"],
            store.decision_params("sisy", "sisy.run", records, plans, runs_per_job),
        )
    fired = []
    for due, decision in zip(claimed, decisions, strict=True):
        assert not isinstance(decision, Exception), decision
        run = decision.fired
        run_id = None
        if run is not None:
            run_id = sql(
                "SELECT id FROM sisy_taskrun WHERE task_id = %s AND scheduled_for = %s",
                [due.task_id, run.instant],
            )[0][0]
        fired.append((due.task_id, run_id, run.instant if run else due.instant))
    return fired


# --- A database of its own ----------------------------------------------------------------


@contextlib.contextmanager
def schema_database(server_url: str, *scripts: str) -> Iterator[psycopg.Connection]:
    """A new database on the test server with procrastinate's schema, then ``scripts``."""
    with (
        empty_database(server_url, "sisy_schema") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        for script in [SchemaManager.get_schema(), *scripts]:
            conn.execute(script)
        yield conn


# --- The catalog of sisy's objects ----------------------------------------------------------

# One query per kind of object; each returns sorted rows that name the object
# and give its definition as PostgreSQL prints it.
CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, character_maximum_length,
               is_nullable, column_default, is_identity
          FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name LIKE 'sisy\\_%%'
         ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
          FROM pg_constraint
         WHERE connamespace = current_schema()::regnamespace
           AND conrelid::regclass::text LIKE 'sisy\\_%%'
         ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename LIKE 'sisy\\_%%'
         ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid)
          FROM pg_proc
         WHERE pronamespace = current_schema()::regnamespace AND proname LIKE 'sisy\\_%%'
         ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
          FROM pg_trigger
         WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'sisy\\_%%'
         ORDER BY 1, 2""",
    "views": """
        SELECT viewname, definition FROM pg_views
         WHERE schemaname = current_schema() AND viewname LIKE 'sisy\\_%%'
         ORDER BY 1""",
    # What psql's \\df+ and \\dv+ show (COMMENT ON).
    "descriptions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), d.description
          FROM pg_description AS d
          JOIN pg_proc AS p ON d.classoid = 'pg_proc'::regclass AND d.objoid = p.oid
         WHERE p.pronamespace = current_schema()::regnamespace AND p.proname LIKE 'sisy\\_%%'
        UNION ALL
        SELECT c.relname, d.objsubid::text, d.description
          FROM pg_description AS d
          JOIN pg_class AS c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relname LIKE 'sisy\\_%%'
         ORDER BY 1, 2""",
}


def catalog(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {kind: conn.execute(query).fetchall() for kind, query in CATALOG.items()}


def assert_same_catalog(built: dict[str, list[tuple]], expected: dict[str, list[tuple]]) -> None:
    for kind in CATALOG:
        assert built[kind], f"no sisy {kind} found: the catalog query is wrong"
        missing = sorted(set(expected[kind]) - set(built[kind]))
        extra = sorted(set(built[kind]) - set(expected[kind]))
        assert not missing and not extra, f"{kind} differ:\nmissing {missing}\nextra {extra}"


# --- manage.py sisy -----------------------------------------------------------------------


def sisy(*args):
    out = io.StringIO()
    call_command("sisy", *args, stdout=out)
    return out.getvalue()


def sisy_health(*args):
    """``manage.py sisy health *args``: its stdout."""
    return sisy("health", *args)


def unhealthy(*args):
    """The one-line message of a failing ``manage.py sisy health *args``."""
    with pytest.raises(CommandError, match=r"^unhealthy: ") as failure:
        sisy_health(*args)
    message = str(failure.value)
    assert "\n" not in message
    return message


# --- The admin's forms --------------------------------------------------------------------


def form_data(**overrides):
    data = {
        "label": "",
        "callable_path": "tests.testapp.jobs.record",
        "pk_override": "",
        "userdata": "{}",
        "options": "{}",
        "schedule": "* * * * *",
        "timezone": "UTC",
        "enabled": "on",
        "iterations": "0",
        "wait_for_schedule": "on",
        "allow_overlap": "on",
        "start_running_0": "",
        "start_running_1": "",
        "end_running_0": "",
        "end_running_1": "",
    }
    data.update(overrides)
    return data


def change_data(task, **overrides):
    """The change form's data, with the recent runs' (read-only) inline formset."""
    data = form_data(**{"label": task.label, **overrides})
    data.update(
        {
            "runs-TOTAL_FORMS": "0",
            "runs-INITIAL_FORMS": "0",
            "runs-MIN_NUM_FORMS": "0",
            "runs-MAX_NUM_FORMS": "0",
        }
    )
    return data


# --- Rows written before the limits -------------------------------------------------------


CALLABLE_INFO = json.dumps({"func_type": "function", "func_path": "tests.testapp.jobs.record"})


# Nested 5,000 levels: more than Python's JSON parser (it recurses) can read.
TOO_DEEP_TEXT = '{"deep": ' + "[" * 5000 + "]" * 5000 + "}"


# What constraints limit what; dropped to write rows "from before the limits".
CONSTRAINTS = {
    "userdata": "sisy_task_userdata_within_limits",
    "options": "sisy_task_options_within_limits",
    "label": "sisy_task_label_printable",
}


@contextlib.contextmanager
def before_the_limits(*columns: str):
    """The constraints of ``columns`` dropped, as before the limits existed; back at the end,
    once the rows written meanwhile are gone.

    (Not added back NOT VALID: PostgreSQL checks a NOT VALID constraint on
    every UPDATE of an old row, so the planner could not write such a task's
    next run, nor a worker its error: a release that adds a constraint fixes
    the rows that break it in the same migration.)
    """
    definitions = {}
    with connection.cursor() as cursor:
        for column in columns:
            cursor.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s",
                [CONSTRAINTS[column]],
            )
            definitions[column] = cursor.fetchone()[0]
            cursor.execute(f"ALTER TABLE sisy_task DROP CONSTRAINT {CONSTRAINTS[column]}")
    try:
        yield
    finally:
        # In a test's transaction, its rollback puts them back.
        if not connection.in_atomic_block:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM sisy_task")
                for column, definition in definitions.items():
                    cursor.execute(
                        f"ALTER TABLE sisy_task ADD CONSTRAINT {CONSTRAINTS[column]} {definition}"
                    )


def insert_raw(label: str, *, userdata: str = "{}", options: str = "{}", schedule="* * * * *"):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO sisy_task (label, callable_info, timezone, schedule, userdata, options) "
            "VALUES (%s, %s, 'UTC', %s, %s, %s) RETURNING id",
            [label, CALLABLE_INFO, schedule, userdata, options],
        )
        return cursor.fetchone()[0]


# --- Backfill -----------------------------------------------------------------------------


MINUTE = dt.timedelta(minutes=1)


def past_minutes(count):
    """The ``count`` whole minutes before the database's current one: (first, last)."""
    ((now,),) = sql("SELECT date_trunc('minute', clock_timestamp())")
    return now - count * MINUTE, now - MINUTE


def backfill_runs(task):
    return TaskRun.objects.filter(task=task, details__backfill=True)


# --- django.tasks' backend ----------------------------------------------------------------


Status = tasks_framework.part("TaskResultStatus")


DoesNotExist = tasks_framework.part("TaskResultDoesNotExist")


def with_options(**options):
    """The default backend with these OPTIONS, in this process (jobs carry what they set)."""
    tasks = {**settings.TASKS, "default": {**settings.TASKS["default"], "OPTIONS": options}}
    return override_settings(TASKS=tasks)


def job_row(job_id):
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT queue_name, priority, scheduled_at, task_name, args, status::text, attempts
                 FROM procrastinate_jobs WHERE id = %s""",
            [int(job_id)],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    names = ("queue_name", "priority", "scheduled_at", "task_name", "args", "status", "attempts")
    job = dict(zip(names, row, strict=True))
    job["args"] = json.loads(job["args"]) if isinstance(job["args"], str) else job["args"]
    return job


def stored_result(job_id):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, errors FROM sisy_task_result WHERE job_id = %s", [int(job_id)]
        )
        row = cursor.fetchone()
    return (
        None
        if row is None
        else (row[0], row[1] if isinstance(row[1], list) else json.loads(row[1]))
    )


def enqueue_rolled_back(task, *args):
    """``task.enqueue(*args)`` in a transaction rolled back; its result, and whether its job was seen."""
    try:
        with transaction.atomic():
            result = task.enqueue(*args)
            seen = job_row(result.id) is not None
            raise backend_tasks.Rollback
    except backend_tasks.Rollback:
        pass
    return result, seen


# --- Metrics ------------------------------------------------------------------------------


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of an exposition, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parsed(metrics.exposition()[0].decode())


def runs_by_outcome(samples) -> collections.Counter:
    return collections.Counter(
        {
            (dict(labels)["status"], dict(labels)["reason"]): value
            for (name, labels), value in samples.items()
            if name == "sisy_runs_total"
        }
    )


def gauge(samples, name, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# --- sql/roles.sql's roles ----------------------------------------------------------------


KINDS = ("worker", "operator", "monitor")


def psql_binary() -> str:
    try:
        candidate = find_bindir() / "psql"
    except RuntimeError:
        candidate = None
    found = str(candidate) if candidate and candidate.is_file() else shutil.which("psql")
    assert found, "the role recipe is a psql script: no psql found next to the server or on PATH"
    return found


# Run a query as whoever the URL logs in as (a role of sql/roles.sql).
as_role = query


def refused(url: str, query: str) -> str:
    """The error of ``query`` refused to the role of ``url`` for lack of privilege."""
    with pytest.raises(errors.InsufficientPrivilege) as failure:
        as_role(url, query)
    return str(failure.value)


def run_recipe(url: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """sql/roles.sql through psql, as an operator runs it (ON_ERROR_STOP: any error fails)."""
    args = [psql_binary(), url, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    return subprocess.run(
        [*args, "-f", str(sql_files.directory() / "roles.sql")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def recipe_roles(url: str) -> Iterator[dict[str, str]]:
    """sql/roles.sql's roles on database ``url`` (names of this run), and a login member of
    each: {kind: its URL}; all dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    groups = {kind: f"shop_{kind}_{suffix}" for kind in KINDS}
    logins = {kind: f"{group}_login" for kind, group in groups.items()}
    with psycopg.connect(url, autocommit=True) as admin:
        try:
            for _ in range(2):  # a second run changes nothing and fails on nothing
                ran = run_recipe(url, **groups)
                assert ran.returncode == 0, ran.stderr
            for kind in KINDS:
                admin.execute(f'CREATE ROLE "{logins[kind]}" LOGIN IN ROLE "{groups[kind]}"')
            # What the project's callables use is the project's to grant (tests.testapp's Hit).
            admin.execute(f'GRANT SELECT, INSERT ON testapp_hit TO "{groups["worker"]}"')
            yield {kind: make_conninfo(url, user=logins[kind]) for kind in KINDS}
        finally:
            for name in [*logins.values(), *groups.values()]:
                admin.execute(
                    f"""DO $$ BEGIN
                        IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
                            DROP OWNED BY "{name}"; DROP ROLE "{name}";
                        END IF; END $$"""
                )
