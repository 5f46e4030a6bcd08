"""No session object can shadow sisy's tables inside sisy's functions and triggers.

PostgreSQL searches ``pg_temp`` first unless a search_path lists it: a session
with ``TEMP TABLE sisy_taskrun`` would otherwise have the triggers and
functions on its writes act on its own copy. The migration pins every function
to the schemas it was created in, with ``pg_temp`` last.
"""

import datetime as dt

import psycopg
import pytest

from sisy_pg import sql_files
from sisy_pg.models import task_with_callable
from tests.integration.helpers import claim, make_due, schema_database, sql
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

# Every table sisy's functions read or write: sisy's own and procrastinate's.
SHADOWED = (
    "sisy_task",
    "sisy_taskrun",
    "sisy_housekeeping",
    "procrastinate_jobs",
    "procrastinate_workers",
)


def one(query, params=None):
    return sql(query, params)[0][0]


def shadow():
    """Temp copies of every table, and temp procrastinate functions that would raise."""
    for name in SHADOWED:
        sql(f"CREATE TEMP TABLE {name} (LIKE public.{name} INCLUDING ALL)")
        sql(f"INSERT INTO pg_temp.{name} OVERRIDING SYSTEM VALUE SELECT * FROM public.{name}")
    for signature in (
        "procrastinate_cancel_job_v1(bigint, boolean, boolean)",
        "procrastinate_defer_jobs_v1(procrastinate_job_to_defer_v1[])",
    ):
        sql(
            f"CREATE FUNCTION pg_temp.{signature} RETURNS bigint[] LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'a temp function was called'; END $$"
        )


def copies():
    """The temp copies' rows: unchanged if no function touched them."""
    return {
        name: sql(f"SELECT t::text FROM pg_temp.{name} AS t ORDER BY t::text") for name in SHADOWED
    }


def make_task(label):
    task = task_with_callable(jobs.record, label=label, schedule="* * * * *")
    task.save()
    return task


def queued_run(task):
    """A run claimed by the planner on the real tables, with its procrastinate job."""
    make_due(task)
    ((_, run_id, _),) = [fired for fired in claim() if fired[0] == task.pk]
    return run_id, one("SELECT job_id FROM public.sisy_taskrun WHERE id = %s", [run_id])


def run_status(run_id):
    return one("SELECT status FROM public.sisy_taskrun WHERE id = %s", [run_id])


def job_status(job_id):
    return one("SELECT status FROM public.procrastinate_jobs WHERE id = %s", [job_id])


def test_disabling_with_a_temp_sisy_taskrun_cancels_the_real_run():
    """The case of issue 13: the trigger cancelled the temp copy; the real run stayed queued."""
    task = make_task("Shadowed")
    run_id, job_id = queued_run(task)
    shadow()
    before = copies()
    sql("UPDATE public.sisy_task SET enabled = false WHERE id = %s", [task.pk])
    assert run_status(run_id) == "cancelled"
    assert job_status(job_id) == "cancelled"
    assert copies() == before


def test_deleting_with_temp_tables_deletes_the_real_runs():
    task = make_task("Deleted")
    run_id, job_id = queued_run(task)
    shadow()
    before = copies()
    sql("DELETE FROM public.sisy_task WHERE id = %s", [task.pk])
    assert sql("SELECT id FROM public.sisy_taskrun WHERE id = %s", [run_id]) == []
    assert job_status(job_id) == "cancelled"
    assert copies() == before


def test_planning_and_running_with_temp_tables_use_the_real_tables():
    task = make_task("Planned")
    shadow()
    before = copies()
    # The planner's functions: claim a due task, store the decision, defer its job.
    sql("UPDATE public.sisy_task SET next_run = clock_timestamp() WHERE id = %s", [task.pk])
    queued = one("SELECT count(*) FROM sisy_claim_due_v1(100, interval '0', interval '30 seconds')")
    assert queued == 1
    plan = sql(
        """SELECT sisy_store_decisions_v1(
               'sisy', 'sisy.run', ARRAY[%(id)s]::bigint[], ARRAY[%(at)s]::timestamptz[],
               ARRAY['queued'], ARRAY[''], ARRAY['{}'::jsonb],
               ARRAY[%(id)s]::bigint[], ARRAY[%(next)s]::timestamptz[], ARRAY[false], ARRAY[''],
               1)""",
        {
            "id": task.pk,
            "at": dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
            "next": dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc),
        },
    )
    assert plan == [(1,)]
    run_id, job_id = sql(
        "SELECT id, job_id FROM public.sisy_taskrun WHERE task_id = %s", [task.pk]
    )[0]
    assert job_status(job_id) == "todo"
    assert one("SELECT fire_count FROM public.sisy_task WHERE id = %s", [task.pk]) == 1

    # The runner's functions: start the run (the task's grace is wide), fail it
    # for a retry, start it again, finish it.
    sql('UPDATE public.sisy_task SET options = \'{"missed": "all"}\' WHERE id = %s', [task.pk])
    started = "SELECT status FROM sisy_start_run_v1(%s, %s, 'w1', '30 seconds', '60 seconds')"
    assert one(started, [run_id, job_id]) == "running"
    assert run_status(run_id) == "running"
    retry_at = one(
        "SELECT sisy_retry_run_v1(%s, 'boom', '', interval '0', 'sisy', 'sisy.run')", [run_id]
    )
    assert retry_at is not None and run_status(run_id) == "queued"
    new_job = one("SELECT job_id FROM public.sisy_taskrun WHERE id = %s", [run_id])
    assert one(started, [run_id, new_job]) == "running"
    assert one("SELECT sisy_finish_run_v1(%s, 'succeeded', '', '', 'sisy', 'sisy.run')", [run_id])
    assert run_status(run_id) == "succeeded"

    # Housekeeping: claimed on the real row, prune deletes the real run.
    assert one("SELECT sisy_housekeeping_due_v1(interval '0')") is True
    assert one("SELECT last_at > now() - interval '1 hour' FROM public.sisy_housekeeping")
    sql(
        "UPDATE public.sisy_taskrun SET finished_at = now() - interval '30 days' WHERE id = %s",
        [run_id],
    )
    assert one("SELECT sisy_prune_runs_v1(interval '14 days', 100)") == 1
    assert copies() == before


def test_breaking_timing_out_closing_and_pausing_with_temp_tables_use_the_real_tables():
    broken = make_task("Broken")
    broken_run, broken_job = queued_run(broken)
    paused = make_task("Paused")
    paused_run, paused_job = queued_run(paused)
    # A run past its deadline, and a queued run whose job was cancelled behind sisy's back.
    slow = make_task("Slow")
    slow_run, _ = queued_run(slow)
    sql(
        "UPDATE public.sisy_taskrun SET status = 'running', started_at = now() - interval '1 h',"
        " details = details || jsonb_build_object('deadline', now() - interval '1 s')"
        " WHERE id = %s",
        [slow_run],
    )
    orphan = make_task("Orphan")
    orphan_run, orphan_job = queued_run(orphan)
    sql("UPDATE public.procrastinate_jobs SET status = 'cancelled' WHERE id = %s", [orphan_job])
    sql(
        "UPDATE public.sisy_taskrun SET scheduled_for = clock_timestamp() WHERE id = %s",
        [broken_run],
    )
    shadow()
    before = copies()

    started = "SELECT status FROM sisy_start_run_v1(%s, %s, 'w1', '30 seconds', '60 seconds')"
    assert one(started, [broken_run, broken_job]) == "running"
    assert one("SELECT sisy_break_task_v1(%s, 'gone', '')", [broken_run]) is True
    assert one("SELECT error FROM public.sisy_task WHERE id = %s", [broken.pk]) == "gone"

    assert one("SELECT sisy_time_out_runs_v1('sisy', 'sisy.run')") == 1
    assert run_status(slow_run) == "timed_out"
    assert one("SELECT sisy_fail_orphaned_runs_v1('30 seconds', 'sisy', 'sisy.run')") >= 1
    assert run_status(orphan_run) == "failed"

    sql("SELECT sisy_pause_v1('Paused')")
    assert one("SELECT enabled FROM public.sisy_task WHERE id = %s", [paused.pk]) is False
    assert run_status(paused_run) == "cancelled" and job_status(paused_job) == "cancelled"
    assert copies() == before


def test_every_function_pins_pg_temp_last():
    rows = sql(
        r"""SELECT proname, (SELECT c FROM unnest(proconfig) AS c WHERE c LIKE 'search_path=%%')
              FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'sisy\_%%'"""
    )
    assert len(rows) >= 25
    unpinned = {name: path for name, path in rows if not (path or "").endswith(", pg_temp")}
    assert unpinned == {}
    assert {path for _, path in rows} == {"search_path=public, pg_temp"}


def test_a_temporary_schema_of_the_migrating_session_is_never_pinned(database_server):
    """A session whose path names pg_temp, with a temp table already made, applies the schema:
    its pg_temp_N (another session's tomorrow) must not be pinned before the tables."""
    with schema_database(database_server) as conn:
        conn.execute("BEGIN")
        conn.execute("SET LOCAL search_path = pg_temp, public")
        conn.execute("CREATE TEMP TABLE scratch (i integer)")
        conn.execute(sql_files.read("schema.sql"))
        conn.execute("COMMIT")
        paths = {
            setting
            for (config,) in conn.execute(
                r"SELECT proconfig FROM pg_proc WHERE proname LIKE 'sisy\_%'"
            )
            for setting in config or ()
            if setting.startswith("search_path=")
        }
    assert paths == {"search_path=public, pg_temp"}


def test_the_schema_refuses_to_be_applied_outside_one_transaction(database_server):
    """psql -f without -1: each statement its own transaction, the pinned path lost."""
    header = sql_files.read("schema.sql").split("-- Limits ---")[0]
    set_path = "SELECT set_config(" + header.split("SELECT set_config(", 1)[1].split(";")[0]
    guard = "DO $$" + header.split("DO $$", 1)[1].rsplit("$$;", 1)[0] + "$$"
    with schema_database(database_server) as conn:  # autocommit: one transaction per statement
        conn.execute(set_path)
        with pytest.raises(psycopg.errors.RaiseException, match="in one transaction"):
            conn.execute(guard)
        conn.execute("BEGIN")
        conn.execute(set_path)
        conn.execute(guard)  # in one transaction: accepted
        conn.execute("ROLLBACK")
