"""Least privilege: no sisy function is PUBLIC's, and sql/roles.sql, run by psql, makes real roles.

Each role logs in to the test database as a member of the role the recipe
made: the worker runs a real worker process that fires a task end to end,
the operator acts through the SECURITY DEFINER functions only, the monitor
reads the two views only.
"""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from psycopg import errors
from psycopg.conninfo import make_conninfo

from sisy_pg import sql_files
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.helpers import current_database_url
from tests.integration.helpers import as_role, refused
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

OPERATOR_FUNCTIONS = ("sisy_run_now_v1", "sisy_pause_v1", "sisy_resume_v1", "sisy_clear_error_v1")
SECRET = "hunter2-in-userdata"


def sisy_functions() -> list[str]:
    """Every sisy function's signature."""
    with connection.cursor() as cursor:
        cursor.execute(
            r"""SELECT p.oid::regprocedure::text FROM pg_proc AS p
                 WHERE p.pronamespace = current_schema()::regnamespace
                   AND p.proname LIKE 'sisy\_%%'
                 ORDER BY 1"""
        )
        return [signature for (signature,) in cursor.fetchall()]


def make_task(label: str) -> Task:
    task = task_with_callable(jobs.record, label=label, schedule="0 0 1 1 *")
    task.userdata = {"token": SECRET}
    task.save()
    return task


# --- PUBLIC ----------------------------------------------------------------------------------


def test_public_can_execute_no_sisy_function():
    functions = sisy_functions()
    assert len(functions) >= 25
    with connection.cursor() as cursor:
        cursor.execute(
            r"""SELECT p.oid::regprocedure::text FROM pg_proc AS p
                 WHERE p.pronamespace = current_schema()::regnamespace
                   AND p.proname LIKE 'sisy\_%%'
                   AND EXISTS (
                       SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner)))
                        WHERE grantee = 0 AND privilege_type = 'EXECUTE'
                   )"""
        )
        assert cursor.fetchall() == []


def test_a_role_granted_nothing_can_call_no_sisy_function():
    name = f"nobody_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{name}" LOGIN')
        try:
            for signature in sisy_functions():
                cursor.execute(
                    "SELECT has_function_privilege(%s, %s, 'EXECUTE')", [name, signature]
                )
                assert cursor.fetchone() == (False,), signature
            make_task("Untouchable")
            url = make_conninfo(current_database_url(), user=name)
            assert "sisy_pause_v1" in refused(url, "SELECT sisy_pause_v1('Untouchable')")
            assert "sisy_claim_due_v1" in refused(
                url, "SELECT * FROM sisy_claim_due_v1(1, '0', '30 seconds')"
            )
        finally:
            cursor.execute(f'DROP ROLE "{name}"')


# --- worker ----------------------------------------------------------------------------------


def test_the_worker_role_cannot_change_a_definition_nor_act_as_an_operator(roles):
    make_task("Defined")
    url = roles["worker"]
    assert as_role(url, "SELECT userdata ->> 'token' FROM sisy_task") == [(SECRET,)]
    refused(url, 'UPDATE sisy_task SET callable_info = \'{"func_path": "os.system"}\'')
    refused(url, "UPDATE sisy_task SET schedule = '* * * * * *'")
    refused(url, 'INSERT INTO sisy_task (callable_info) VALUES (\'{"func_path": "x.y"}\')')
    refused(url, "DELETE FROM sisy_task")
    refused(url, "SELECT sisy_pause_v1('Defined')")
    refused(url, "SELECT * FROM sisy_act_v1('pause', ARRAY[1::bigint])")


# --- operator --------------------------------------------------------------------------------


def test_the_operator_acts_through_the_definer_functions_only(roles):
    task = make_task("Nightly")
    url = roles["operator"]
    for function, done_state in [
        ("sisy_pause_v1", {"enabled": False}),
        ("sisy_resume_v1", {"enabled": True}),
        ("sisy_run_now_v1", {"enabled": True}),
    ]:
        ((task_id, label, done, refusal),) = as_role(url, f"SELECT * FROM {function}('Nightly')")
        assert (task_id, label, done, refusal) == (task.pk, "Nightly", True, None), function
        task.refresh_from_db()
        assert task.enabled is done_state["enabled"]
    Task.objects.filter(pk=task.pk).update(error="broken: gone")
    ((_, _, done, _),) = as_role(url, f"SELECT * FROM sisy_clear_error_v1('{task.pk}')")
    task.refresh_from_db()
    assert done is True and task.error == ""
    # It sees what it did, through the views.
    assert as_role(url, "SELECT label FROM sisy_task_status") == [("Nightly",)]


def test_the_operator_cannot_read_secrets_change_definitions_or_delete_history(roles):
    task = make_task("Guarded")
    TaskRun.objects.create(task=task, scheduled_for=task.created_at, status="succeeded")
    url = roles["operator"]
    refused(url, "SELECT userdata FROM sisy_task")
    refused(url, "SELECT callable_info FROM sisy_task")
    refused(url, "UPDATE sisy_task SET schedule = '* * * * * *'")
    refused(url, "DELETE FROM sisy_taskrun")
    refused(url, "UPDATE sisy_taskrun SET status = 'failed'")
    refused(url, "SELECT * FROM sisy_act_v1('pause', ARRAY[1::bigint])")
    refused(url, "SELECT count(*) FROM procrastinate_jobs")
    refused(url, "CREATE TABLE sisy_decoy (id int)")
    assert TaskRun.objects.filter(task=task).count() == 1


def test_a_temp_table_of_the_operator_does_not_redirect_the_definer_functions(roles):
    """The classic SECURITY DEFINER attack: a session object in the caller's pg_temp."""
    real = make_task("Real")
    with psycopg.connect(roles["operator"], autocommit=True) as conn:
        conn.execute(
            "CREATE TEMP TABLE sisy_task (id bigint, label varchar, enabled boolean,"
            " finished_at timestamptz, error text, next_run timestamptz)"
        )
        # Were it searched, 'Decoy' would name the real task.
        conn.execute(
            "INSERT INTO pg_temp.sisy_task VALUES (%s, 'Decoy', true, NULL, '', NULL)", [real.pk]
        )
        with pytest.raises(errors.NoDataFound):
            conn.execute("SELECT * FROM sisy_pause_v1('Decoy')")
        ((_, label, done, _),) = conn.execute("SELECT * FROM sisy_pause_v1('Real')").fetchall()
        assert (label, done) == ("Real", True)
        assert conn.execute("SELECT enabled FROM pg_temp.sisy_task").fetchall() == [(True,)]
    real.refresh_from_db()
    assert real.enabled is False


# --- monitor ---------------------------------------------------------------------------------


def test_the_monitor_reads_the_two_views_and_nothing_else(roles):
    task = make_task("Watched")
    TaskRun.objects.create(
        task=task, scheduled_for=task.created_at, status="failed", error="ValueError: x"
    )
    url = roles["monitor"]
    status = as_role(url, "SELECT label, state, last_status FROM sisy_task_status")
    assert status == [("Watched", "failing", "failed")]
    history = as_role(url, "SELECT label, status, error FROM sisy_run_history")
    assert history == [("Watched", "failed", "ValueError: x")]
    # Neither view shows userdata or the callable, in any column.
    for view in ("sisy_task_status", "sisy_run_history"):
        ((text,),) = as_role(url, f"SELECT string_agg(v::text, ' ') FROM {view} AS v")
        assert SECRET not in text and "tests.testapp.jobs" not in text, view
    # Every relation of the schema but the two views is out of reach; no sisy
    # function but health, the metrics and the one the status view calls.
    login = psycopg.conninfo.conninfo_to_dict(url)["user"]
    with connection.cursor() as cursor:
        cursor.execute(
            r"""SELECT c.relname FROM pg_class AS c
                 WHERE c.relnamespace = current_schema()::regnamespace
                   AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')
                   AND (has_table_privilege(%(role)s, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                        OR (c.relkind = 'S' AND has_sequence_privilege(%(role)s, c.oid, 'USAGE')))
                 ORDER BY 1""",
            {"role": login},
        )
        assert cursor.fetchall() == [("sisy_run_history",), ("sisy_task_status",)]
        cursor.execute(
            r"""SELECT p.proname FROM pg_proc AS p
                 WHERE p.pronamespace = current_schema()::regnamespace
                   AND p.proname LIKE 'sisy\_%%'
                   AND has_function_privilege(%(role)s, p.oid, 'EXECUTE')""",
            {"role": login},
        )
        assert sorted(cursor.fetchall()) == [
            ("sisy_health",),
            ("sisy_health_v1",),
            ("sisy_metrics",),
            ("sisy_metrics_v1",),
            ("sisy_task_state_v1",),
        ]
    for query in (
        "SELECT id FROM sisy_task",
        "SELECT id FROM sisy_taskrun",
        "SELECT id FROM sisy_worker",
        "SELECT id FROM procrastinate_jobs",
        "SELECT * FROM sisy_pause_v1('Watched')",
    ):
        refused(url, query)


def test_the_monitor_reads_health_without_any_right_on_the_tables(roles):
    """sisy_health_v1 is SECURITY DEFINER: its verdicts, not the rows behind them."""
    task = make_task("Forgotten")
    Task.objects.filter(pk=task.pk).update(next_run=None)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE sisy_task SET created_at = now() - interval '1 hour',"
            " modified_at = now() - interval '1 hour' WHERE id = %s",
            [task.pk],
        )
    rows = as_role(roles["monitor"], "SELECT check_name, ok, subjects FROM sisy_health_v1()")
    assert rows is not None and ("unplanned", False, ["Forgotten"]) in rows
    # The metrics too (sisy_metrics_v1, SECURITY DEFINER: it folds the counters as their owner).
    scraped = as_role(
        roles["monitor"],
        "SELECT labels ->> 'state', value FROM sisy_metrics_v1() WHERE metric = 'tasks'",
    )
    assert scraped == [("unplanned", 1.0)]
    refused(roles["monitor"], "SELECT sisy_worker_seen_v1(1, 'x', NULL, true, 1, 0, 0, 'ok', '{}')")


def test_the_worker_role_may_call_every_function_of_the_workers_queries(roles):
    """What sql/queries.sql calls (the planner, the runners, the worker's report)."""
    named = sorted(set(re.findall(r"\b(sisy_\w+_v\d+)\(", sql_files.read("queries.sql"))))
    assert "sisy_worker_seen_v1" in named and "sisy_claim_due_v1" in named
    login = psycopg.conninfo.conninfo_to_dict(roles["worker"])["user"]
    with connection.cursor() as cursor:
        cursor.execute(
            r"""SELECT p.proname FROM pg_proc AS p
                 WHERE p.pronamespace = current_schema()::regnamespace
                   AND p.proname = ANY (%(named)s)
                   AND NOT has_function_privilege(%(role)s, p.oid, 'EXECUTE')""",
            {"named": named, "role": login},
        )
        assert cursor.fetchall() == []


def test_the_worker_role_reports_itself_and_reads_health(roles):
    url = roles["worker"]
    ((worker_id,),) = as_role(url, "SELECT worker_id FROM procrastinate_register_worker_v1()")
    as_role(
        url,
        "SELECT sisy_worker_seen_v1(%s, 'host:1:w', NULL, true, 4, 0, 0, 'ok', '{}')",
        [worker_id],
    )
    rows = as_role(url, "SELECT check_name, ok FROM sisy_health_v1()")
    assert rows is not None and ("workers", True) in rows
    as_role(url, "SELECT sisy_worker_gone_v1(%s)", [worker_id])
    assert as_role(url, "SELECT count(*) FROM sisy_worker WHERE id = %s", [worker_id]) == [(0,)]


# --- the command -----------------------------------------------------------------------------


def test_sisy_roles_prints_the_recipe(capsys):
    call_command("sisy_roles")
    assert capsys.readouterr().out == sql_files.roles()
