"""The triggers and functions of sql/schema.sql, driven by every kind of writer."""

import datetime as dt
import json

import psycopg
import pytest
from django.db import IntegrityError, models, transaction
from django.db.utils import DataError, InternalError
from django.utils.dateparse import parse_datetime

from sisy_pg import sql_files
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.integration.helpers import claim, make_due, make_task, sql
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

QUERIES = sql_files.queries()


def next_run(task):
    return sql("SELECT next_run FROM sisy_task WHERE id = %s", [task.pk])[0][0]


def start_run(run_id, worker="w1"):
    return sql(
        "SELECT status FROM sisy_start_run_v1(%s, NULL, %s, '30 seconds', '60 seconds')",
        [run_id, worker],
    )[0][0]


def job_status(job_id):
    return sql("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])[0][0]


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE sisy_task SET schedule = '* * * * * *' WHERE id = %s",
        "UPDATE sisy_task SET timezone = 'Asia/Tokyo' WHERE id = %s",
        "UPDATE sisy_task SET start_running = now() + interval '1 day' WHERE id = %s",
        "UPDATE sisy_task SET end_running = now() + interval '1 day' WHERE id = %s",
        "UPDATE sisy_task SET iterations = 5 WHERE id = %s",
        "UPDATE sisy_task SET wait_for_schedule = false WHERE id = %s",
    ],
)
def test_raw_sql_change_of_the_schedule_clears_next_run_for_replanning(change):
    task = make_task()
    assert next_run(task) is not None
    sql(change, [task.pk])
    assert next_run(task) is None


@pytest.mark.parametrize(
    ("change", "withdrawn"),
    [
        ("UPDATE sisy_task SET schedule = '*/2 * * * * *' WHERE id = %s", True),
        ("UPDATE sisy_task SET timezone = 'Asia/Tokyo' WHERE id = %s", True),
        ("UPDATE sisy_task SET end_running = now() + interval '1 day' WHERE id = %s", True),
        ("UPDATE sisy_task SET iterations = 5 WHERE id = %s", False),
        ("UPDATE sisy_task SET userdata = '{\"a\": 1}' WHERE id = %s", False),
    ],
)
def test_a_new_schedule_withdraws_the_fires_claimed_for_the_old_one(change, withdrawn):
    task = make_task(options={"missed": "all"})
    retried = make_task()
    for each in (task, retried):
        make_due(each)
    fired = {task_id: run_id for task_id, run_id, _ in claim()}
    job = TaskRun.objects.get(pk=fired[task.pk]).job_id
    # The other task's run failed once and waits for its retry: it stays.
    assert start_run(fired[retried.pk]) == "running"
    sql(
        "SELECT sisy_retry_run_v1(%s, 'E', 'T', '1 hour', 'sisy', 'sisy.run')",
        [fired[retried.pk]],
    )
    sql(change, [task.pk])
    row = Task.objects.get(pk=task.pk)
    if withdrawn:
        assert not TaskRun.objects.filter(pk=fired[task.pk]).exists()
        assert job_status(job) == "cancelled"
        assert (row.fire_count, row.last_run) == (0, None)
    else:
        assert TaskRun.objects.get(pk=fired[task.pk]).status == "queued"
        assert job_status(job) == "todo"
        assert row.fire_count == 1
    sql(change, [retried.pk])
    assert TaskRun.objects.get(pk=fired[retried.pk]).status == "queued"


def test_queryset_update_and_save_are_seen_the_same_way():
    task = make_task()
    Task.objects.filter(pk=task.pk).update(schedule="*/5 * * * * *")
    assert next_run(task) is None
    other = make_task()
    other.schedule = "0 * * * *"
    other.save()
    assert next_run(other) is None


def test_unrelated_change_keeps_next_run_and_bumps_modified_at():
    task = make_task()
    before = next_run(task)
    sql("UPDATE sisy_task SET modified_at = now() - interval '1 day' WHERE id = %s", [task.pk])
    sql("UPDATE sisy_task SET label = 'renamed', userdata = '{\"x\": 1}' WHERE id = %s", [task.pk])
    assert next_run(task) == before
    assert sql(
        "SELECT modified_at > now() - interval '1 minute' FROM sisy_task WHERE id = %s", [task.pk]
    ) == [(True,)]
    # The planner's own bookkeeping is not a modification.
    sql("UPDATE sisy_task SET modified_at = now() - interval '1 day' WHERE id = %s", [task.pk])
    sql("UPDATE sisy_task SET next_run = now(), fire_count = 3 WHERE id = %s", [task.pk])
    assert sql(
        "SELECT modified_at < now() - interval '1 hour' FROM sisy_task WHERE id = %s", [task.pk]
    ) == [(True,)]


def test_explicit_next_run_is_obeyed_as_run_now():
    task = make_task(schedule="0 0 1 1 *")
    sql("UPDATE sisy_task SET next_run = now() WHERE id = %s", [task.pk])
    assert next_run(task) is not None
    assert [row[0] for row in claim()] == [task.pk]


def test_disable_clears_next_run():
    task = make_task()
    sql("UPDATE sisy_task SET enabled = false WHERE id = %s", [task.pk])
    assert next_run(task) is None


def test_plain_bulk_create_leaves_rows_for_the_planner():
    """Django's own bulk_create (a historical model's, in a migration) plans nothing."""
    info = task_with_callable(jobs.record).callable_info
    models.QuerySet(Task).bulk_create([Task(label=f"b{i}", callable_info=info) for i in range(3)])
    assert sql("SELECT count(*) FROM sisy_task WHERE next_run IS NULL AND enabled")[0][0] == 3
    Task.objects.bulk_create([Task(label=f"c{i}", callable_info=info) for i in range(3)])
    assert sql("SELECT count(*) FROM sisy_task WHERE next_run IS NULL AND enabled")[0][0] == 3


def test_raw_insert_gets_defaults_label_and_session_timezone():
    sql("SET TIME ZONE 'America/New_York'")
    try:
        sql("""INSERT INTO sisy_task (callable_info, label, timezone)
               VALUES ('{"func_type": "function", "func_path": "tests.testapp.jobs.record"}', '', NULL)""")
    finally:
        sql("SET TIME ZONE 'UTC'")
    row = sql("SELECT label, timezone, schedule, enabled, userdata::text, next_run FROM sisy_task")[
        0
    ]
    assert row == ("tests.testapp.jobs.record", "America/New_York", "* * * * *", True, "{}", None)


@pytest.mark.parametrize(
    ("column", "value", "error"),
    [
        ("timezone", "'Mars/Olympus'", 'unknown time zone "Mars/Olympus"'),
        ("userdata", "'[1, 2]'", "sisy_task_userdata_is_object"),
        ("schedule", "'* * *'", "sisy_task_schedule_fields"),
        ("callable_info", "'{}'", "sisy_task_callable_has_path"),
        ("end_running", "'2000-01-01'", "sisy_task_running_window"),
    ],
)
def test_database_refuses_what_python_would_refuse(column, value, error):
    task = make_task(start_running=None)
    if column == "end_running":
        sql("UPDATE sisy_task SET start_running = now() WHERE id = %s", [task.pk])
    with pytest.raises((IntegrityError, DataError, InternalError)) as info, transaction.atomic():
        sql(f"UPDATE sisy_task SET {column} = {value} WHERE id = %s", [task.pk])
    assert error in str(info.value)


def test_runs_due_at_one_instant_share_jobs_up_to_runs_per_job():
    tasks = [make_task() for _ in range(5)]
    instant = sql("SELECT date_trunc('second', clock_timestamp()) - interval '1 s'")[0][0]
    sql("UPDATE sisy_task SET next_run = %s WHERE id = ANY(%s)", [instant, [t.pk for t in tasks]])
    late = make_task()
    make_due(late)  # due at another instant: a job of its own
    fired = claim(runs_per_job=2)
    runs = {run_id: TaskRun.objects.get(pk=run_id) for _, run_id, _ in fired}
    jobs_of_instant = {}
    for run in runs.values():
        jobs_of_instant.setdefault(run.scheduled_for, set()).add(run.job_id)
    assert sorted(len(j) for j in jobs_of_instant.values()) == [1, 3]  # 5 runs: 2 + 2 + 1
    args = sql(
        "SELECT args FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id",
        [[run.job_id for run in runs.values()]],
    )
    carried = [json.loads(a)["run_ids"] for (a,) in args]
    assert sorted(len(ids) for ids in carried) == [1, 1, 2, 2]
    assert sorted(i for ids in carried for i in ids) == sorted(runs)
    for ids in carried:  # every run of a job is due at the job's instant
        at = {runs[i].scheduled_for for i in ids}
        assert len(at) == 1


def test_cancelling_one_run_of_a_shared_job_keeps_the_job_for_the_others():
    first, second = make_task(), make_task()
    instant = sql("SELECT date_trunc('second', clock_timestamp()) - interval '1 s'")[0][0]
    sql("UPDATE sisy_task SET next_run = %s WHERE id = ANY(%s)", [instant, [first.pk, second.pk]])
    claim(runs_per_job=10)
    (job_id,) = set(TaskRun.objects.values_list("job_id", flat=True))
    Task.objects.filter(pk=first.pk).update(enabled=False)  # cancels its queued run
    assert TaskRun.objects.get(task=first).status == "cancelled"
    assert job_status(job_id) == "todo"  # the other run still waits on it
    TaskRun.objects.filter(task=second).delete()
    assert job_status(job_id) == "cancelled"


def test_claim_inserts_one_run_and_one_job_and_never_twice():
    task = make_task(options={"missed": "all"})  # no coalescing: the constraint decides
    make_due(task)
    ((_task_id, run_id, fired_for),) = claim()
    run = TaskRun.objects.get(pk=run_id)
    assert (run.task_id, run.scheduled_for, run.status) == (task.pk, fired_for, "queued")
    assert job_status(run.job_id) == "todo"
    assert sql(
        "SELECT args->'run_ids', task_name, queue_name FROM procrastinate_jobs WHERE id = %s",
        [run.job_id],
    )[0] == (f"[{run_id}]", "sisy.run", "sisy")
    task.refresh_from_db()
    assert (task.fire_count, task.last_run) == (1, fired_for)
    # The same instant claimed again (next_run set back to it): no second run.
    sql("UPDATE sisy_task SET next_run = %s WHERE id = %s", [fired_for, task.pk])
    ((_, again, _),) = claim()
    assert again == run_id
    assert TaskRun.objects.count() == 1
    task.refresh_from_db()
    assert task.fire_count == 1


def test_unique_constraint_guards_the_history_directly():
    task = make_task()
    make_due(task)
    ((_, _run_id, fired_for),) = claim()
    with (
        pytest.raises(IntegrityError, match="sisy_taskrun_once_per_instant"),
        transaction.atomic(),
    ):
        TaskRun.objects.create(task=task, scheduled_for=fired_for)


def test_instants_missed_by_an_outage_are_recorded_and_the_latest_caught_up():
    # Daily at midnight, a grace of 1 s, and the workers down for three days.
    task = make_task(schedule="0 0 * * *", timezone="UTC", options={"grace": 1})
    sql(
        "UPDATE sisy_task SET next_run = date_trunc('day', now()) - interval '3 days' "
        "WHERE id = %s",
        [task.pk],
    )
    ((_, run_id, instant),) = claim()
    runs = {r.status: r for r in TaskRun.objects.filter(task=task)}
    assert set(runs) == {"missed", "queued"}
    missed, catch_up = runs["missed"], runs["queued"]
    # The latest missed instant (last midnight) runs once, as a catch-up...
    assert catch_up.pk == run_id and catch_up.details["catch_up"] is True
    assert instant == sql("SELECT date_trunc('day', now())")[0][0]
    # ...and one row records the others, each covered by the range it names.
    assert missed.scheduled_for == instant - dt.timedelta(days=3)
    assert missed.details == {
        "reason": "missed",
        "through": (instant - dt.timedelta(days=1)).isoformat(),
        "policy": "coalesce",
    }
    assert missed.error.startswith("missed: ") and "only the latest, " in missed.error
    task.refresh_from_db()
    assert (task.fire_count, task.last_run) == (1, instant)
    assert task.next_run == instant + dt.timedelta(days=1)


@pytest.mark.parametrize("policy", ["skip", "coalesce"])
def test_after_an_outage_the_latest_instant_runs_on_time_and_one_row_records_the_rest(policy):
    task = make_task(options={"missed": policy})  # every minute, grace 60 s
    sql(
        "UPDATE sisy_task SET next_run = date_trunc('minute', now()) - interval '1 hour' "
        "WHERE id = %s",
        [task.pk],
    )
    ((_, run_id, instant),) = claim()
    # The claim reads the clock (clock_timestamp), not the test transaction's start (now()):
    # a claim a few ms after a minute turned takes that minute's instant.
    now = sql("SELECT clock_timestamp()")[0][0]
    # The latest instant is within its grace: it runs as any fire would.
    assert now - dt.timedelta(minutes=1) < instant <= now
    run = TaskRun.objects.get(pk=run_id)
    assert run.status == "queued" and "catch_up" not in run.details
    missed = TaskRun.objects.get(task=task, status="missed")
    assert missed.scheduled_for == instant - dt.timedelta(hours=1)
    assert missed.details["through"] == (instant - dt.timedelta(minutes=1)).isoformat()
    task.refresh_from_db()
    assert task.next_run == instant + dt.timedelta(minutes=1)


def test_skip_runs_no_instant_past_its_grace():
    task = make_task(schedule="0 0 * * *", timezone="UTC", options={"grace": 1, "missed": "skip"})
    sql(
        "UPDATE sisy_task SET next_run = date_trunc('day', now()) - interval '3 days' "
        "WHERE id = %s",
        [task.pk],
    )
    ((_, run_id, _),) = claim()
    assert run_id is None
    (missed,) = TaskRun.objects.filter(task=task)
    assert missed.status == "missed" and "policy skip: none is run" in missed.error
    today = sql("SELECT date_trunc('day', now())")[0][0]
    assert missed.details["through"] == today.isoformat()
    task.refresh_from_db()
    assert task.next_run == today + dt.timedelta(days=1) and task.fire_count == 0


@pytest.mark.parametrize("policy", ["skip", "coalesce"])
def test_a_fire_never_queues_behind_a_waiting_run(policy):
    task = make_task(options={"missed": policy})
    make_due(task)
    ((_, first, _),) = claim()
    make_due(task)
    ((_, second, instant),) = claim()
    assert second is None
    skipped = TaskRun.objects.get(task=task, scheduled_for=instant)
    assert skipped.status == "skipped"
    assert skipped.details == {"reason": "coalesced", "into_run": first}
    assert skipped.error.startswith(f"coalesced: run {first} ")
    assert TaskRun.objects.filter(task=task, status="queued").count() == 1


@pytest.mark.parametrize("how", ["raw", "orm", "queryset"])
def test_disabling_cancels_the_pending_fire_in_the_same_transaction(how):
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    job_id = TaskRun.objects.get(pk=run_id).job_id
    if how == "raw":
        sql("UPDATE sisy_task SET enabled = false WHERE id = %s", [task.pk])
    elif how == "orm":
        task.refresh_from_db()
        task.enabled = False
        task.save()
    else:
        Task.objects.filter(pk=task.pk).update(enabled=False)
    run = TaskRun.objects.get(pk=run_id)
    assert run.status == "cancelled" and "disabled" in run.error
    assert job_status(job_id) == "cancelled"


@pytest.mark.parametrize("how", ["raw", "orm"])
def test_deleting_removes_history_and_cancels_the_pending_fire(how):
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    job_id = TaskRun.objects.get(pk=run_id).job_id
    if how == "raw":
        sql("DELETE FROM sisy_task WHERE id = %s", [task.pk])
    else:
        Task.objects.get(pk=task.pk).delete()
    assert not TaskRun.objects.exists()
    assert job_status(job_id) == "cancelled"


def test_a_finished_task_keeps_its_last_queued_run():
    task = make_task(iterations=1)
    make_due(task)
    ((_, run_id, _),) = claim()
    sql("UPDATE sisy_task SET enabled = false, finished_at = now() WHERE id = %s", [task.pk])
    assert TaskRun.objects.get(pk=run_id).status == "queued"


def test_re_enabling_a_finished_task_lets_the_planner_decide_again():
    task = make_task()
    sql("UPDATE sisy_task SET enabled = false, finished_at = now() WHERE id = %s", [task.pk])
    sql("UPDATE sisy_task SET enabled = true WHERE id = %s", [task.pk])
    assert sql("SELECT finished_at, next_run FROM sisy_task WHERE id = %s", [task.pk])[0] == (
        None,
        None,
    )


def _doing(run_id):
    """Its job is being executed by a live worker, as procrastinate would record it."""
    ((worker_id,),) = sql("SELECT procrastinate_register_worker_v1()")
    sql(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
        "WHERE id = (SELECT job_id FROM sisy_taskrun WHERE id = %s)",
        [worker_id, run_id],
    )


def test_a_fire_that_would_overlap_is_skipped_at_claim_naming_the_running_run():
    task = make_task(allow_overlap=False)
    make_due(task)
    ((_, first, _),) = claim()
    _doing(first)
    assert start_run(first, "w1") == "running"
    make_due(task)
    ((_, second, instant),) = claim()
    assert second is None
    skipped = TaskRun.objects.get(task=task, scheduled_for=instant)
    assert (skipped.status, skipped.details) == (
        "skipped",
        {"reason": "overlap", "overlapped_run": first},
    )
    assert skipped.error.startswith(f"overlap: run {first} (for ")


def test_start_run_then_overlap_is_skipped_when_not_allowed():
    task = make_task(options={"missed": "all"})  # two runs may wait
    make_due(task)
    ((_, first, _),) = claim()
    make_due(task)
    ((_, second, _),) = claim()
    _doing(first)
    # Overlap forbidden after both were queued: the start decides again.
    Task.objects.filter(pk=task.pk).update(allow_overlap=False)
    assert start_run(first, "w1") == "running"
    assert start_run(second, "w2") == "skipped"
    assert TaskRun.objects.get(pk=second).details["overlapped_run"] == first
    assert "does not allow overlap" in TaskRun.objects.get(pk=second).error
    # A run that is not queued any more is never started again.
    assert start_run(second, "w3") == "skipped"
    assert start_run(-1, "w3") == "missing"


def test_overlap_allowed_runs_concurrently():
    task = make_task(allow_overlap=True)
    make_due(task)
    ((_, first, _),) = claim()
    start_run(first, "w1")
    make_due(task)
    ((_, second, _),) = claim()
    assert start_run(second, "w2") == "running"


def test_orphaned_runs_are_failed():
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    start_run(run_id, "w1")
    # Its job never reached a worker (worker_id NULL): nobody is running it.
    assert sql("SELECT sisy_fail_orphaned_runs_v1('30 seconds', 'sisy', 'sisy.run')") == [(1,)]
    assert "worker lost" in TaskRun.objects.get(pk=run_id).error


def _job_of(run_id):
    return sql("SELECT job_id FROM sisy_taskrun WHERE id = %s", [run_id])[0][0]


@pytest.mark.parametrize(
    ("job_change", "closed"),
    [
        (None, False),  # todo: a worker will fetch it
        (
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = {live} WHERE id = {job}",
            False,
        ),
        (
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = {stale} WHERE id = {job}",
            True,
        ),
        ("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = {job}", True),
        ("DELETE FROM procrastinate_jobs WHERE id = {job}", True),
    ],
    ids=["todo", "doing-live-worker", "doing-dead-worker", "job-failed", "job-vanished"],
)
def test_queued_runs_whose_job_cannot_run_them_are_closed(job_change, closed):
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    ((live,),) = sql("SELECT procrastinate_register_worker_v1()")
    ((stale,),) = sql("SELECT procrastinate_register_worker_v1()")
    sql(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 minute' "
        "WHERE id = %s",
        [stale],
    )
    if job_change:
        sql(job_change.format(live=live, stale=stale, job=_job_of(run_id)))
    assert sql("SELECT sisy_fail_orphaned_runs_v1('30 seconds', 'sisy', 'sisy.run')") == [
        (int(closed),)
    ]
    run = TaskRun.objects.get(pk=run_id)
    if closed:
        assert run.status == "failed" and run.error.startswith("not started:"), run.error
    else:
        assert run.status == "queued"


def test_housekeeping_is_done_by_one_planner_per_period():
    sql("UPDATE sisy_housekeeping SET last_at = '-infinity'")
    due = [sql("SELECT sisy_housekeeping_due_v1('10 seconds')")[0][0] for _ in range(3)]
    assert due == [True, False, False]
    sql("UPDATE sisy_housekeeping SET last_at = now() - interval '11 seconds'")
    assert sql("SELECT sisy_housekeeping_due_v1('10 seconds')") == [(True,)]


def test_status_view():
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    sql("UPDATE sisy_taskrun SET status = 'failed', error = 'boom' WHERE id = %s", [run_id])
    row = sql(
        "SELECT label, running, last_status, last_error FROM sisy_task_status WHERE id = %s",
        [task.pk],
    )
    assert row == [(task.label, False, "failed", "boom")]
    assert sql("SELECT count(*) FROM sisy_run_history WHERE task_id = %s", [task.pk]) == [(1,)]


@pytest.mark.django_db(transaction=True)
def test_every_committed_change_notifies_the_workers():
    from sisy_pg.store import default_store

    listener = psycopg.connect(**default_store().connection_params(), autocommit=True)
    try:
        listener.execute("LISTEN sisy_task_changed")
        task = make_task()
        received = list(listener.notifies(timeout=2, stop_after=1))
        assert [n.channel for n in received] == ["sisy_task_changed"]
        Task.objects.filter(pk=task.pk).update(enabled=False)
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1
        with transaction.atomic():  # many rows, one transaction: one notification
            for i in range(5):
                make_task(label=f"t{i}")
            sql("DELETE FROM sisy_task WHERE label = 't0'")
        assert len(list(listener.notifies(timeout=1))) == 1
    finally:
        listener.close()


def test_a_run_running_under_another_job_is_not_started_again():
    """A job fetched twice (procrastinate's retry of a stalled job, an admin's retry)."""
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    job = TaskRun.objects.get(pk=run_id).job_id
    start = "SELECT status FROM sisy_start_run_v1(%s, %s, 'w1', '30 seconds', '60 seconds')"
    assert sql(start, [run_id, job]) == [("running",)]
    # The same job asking again (its first reply lost) may run it; another may not.
    assert sql(start, [run_id, job]) == [("running",)]
    assert sql(start, [run_id, job + 1000]) == [("started_elsewhere",)]
    assert start_run(run_id) == "started_elsewhere"


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_row_a_writer_holds_is_busy_not_waited_for():
    """The runner never waits for one run's lock while it holds another's (no deadlock)."""
    from sisy_pg.store import default_store

    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    with psycopg.connect(**default_store().connection_params()) as writer:
        writer.execute("SELECT 1 FROM sisy_taskrun WHERE id = %s FOR UPDATE", [run_id])
        ((status, wait),) = sql(
            "SELECT status, wait FROM sisy_start_run_v1(%s, NULL, 'w1', '30 seconds', '60 seconds')",
            [run_id],
        )
        assert (status, wait) == ("busy", 0.01)
        writer.rollback()
    assert start_run(run_id) == "running"
    assert start_run(-1) == "missing"


def test_prune_runs_deletes_old_finished_runs_and_their_jobs():
    task = make_task(options={"missed": "all"})  # runs may wait behind each other
    make_due(task)
    ((_, old, _),) = claim()
    make_due(task)
    ((_, recent, _),) = claim()
    make_due(task)
    ((_, queued, _),) = claim()
    old_job = TaskRun.objects.get(pk=old).job_id
    sql("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", [old_job])
    sql(
        "UPDATE sisy_taskrun SET status = 'succeeded', finished_at = now() - interval '30 days' WHERE id = %s",
        [old],
    )
    sql(
        "UPDATE sisy_taskrun SET status = 'failed', finished_at = now() - interval '1 day' WHERE id = %s",
        [recent],
    )
    assert sql("SELECT sisy_prune_runs_v1('14 days', 100)") == [(1,)]
    assert set(TaskRun.objects.values_list("pk", flat=True)) == {recent, queued}
    assert sql("SELECT count(*) FROM procrastinate_jobs WHERE id = %s", [old_job]) == [(0,)]


# --- Every function pins its search_path ------------------------------------------------


def test_every_function_pins_its_search_path():
    rows = sql(
        r"""SELECT proname, coalesce(proconfig, '{}') FROM pg_proc
             WHERE pronamespace = current_schema()::regnamespace AND proname LIKE 'sisy\_%'"""
    )
    assert len(rows) >= 15
    unpinned = {
        name for name, config in rows if not any(c.startswith("search_path=") for c in config)
    }
    assert unpinned == set()


def test_triggers_use_sisy_tables_whatever_the_writers_search_path():
    """A writer whose search_path finds another sisy_taskrun first cannot redirect the triggers."""
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    sql("CREATE SCHEMA decoy")
    sql("CREATE TABLE decoy.sisy_taskrun (LIKE public.sisy_taskrun)")
    sql("INSERT INTO decoy.sisy_taskrun SELECT * FROM public.sisy_taskrun WHERE id = %s", [run_id])
    sql("SET LOCAL search_path TO decoy, public")
    try:
        sql("UPDATE public.sisy_task SET enabled = false WHERE id = %s", [task.pk])
        assert sql("SELECT status FROM decoy.sisy_taskrun") == [("queued",)]
    finally:
        sql("SET LOCAL search_path TO public")
    assert TaskRun.objects.get(pk=run_id).status == "cancelled"


# --- Runs: late, buffered, retried, timed out, broken -------------------------------------


def _run(run_id):
    return TaskRun.objects.get(pk=run_id)


def test_a_run_reaching_a_worker_past_its_grace_is_missed_not_run_late():
    task = make_task(options={"grace": 5})
    sql(
        "UPDATE sisy_task SET next_run = clock_timestamp() - interval '4 seconds' WHERE id = %s",
        [task.pk],
    )
    ((_, run_id, _),) = claim()  # 4 s late: within the grace, queued
    assert _run(run_id).status == "queued"
    sql(
        "UPDATE sisy_taskrun SET scheduled_for = scheduled_for - interval '2 seconds' "
        "WHERE id = %s",
        [run_id],
    )  # as if it had waited 2 s more for a worker
    assert start_run(run_id) == "missed"
    run = _run(run_id)
    assert run.details["reason"] == "late" and run.details["late_by"] > 5
    assert run.error.startswith("missed: reached a worker ") and "grace of 5 s" in run.error
    assert run.started_at is None


def test_a_run_of_a_task_that_runs_every_instant_is_never_late():
    task = make_task(options={"missed": "all", "grace": 0})
    make_due(task)
    ((_, run_id, _),) = claim()
    assert start_run(run_id) == "running"


def test_a_buffered_run_starts_when_the_running_one_finishes():
    task = make_task(options={"overlap": "buffer_one"})
    make_due(task)
    ((_, first, _),) = claim()
    _doing(first)
    assert start_run(first) == "running"
    make_due(task)
    ((_, buffered, _),) = claim()
    run = _run(buffered)
    assert (run.status, run.job_id, run.details) == ("queued", None, {"buffered_behind": first})
    make_due(task)
    ((_, third, instant),) = claim()  # the buffer holds one: coalesced into it
    assert third is None
    assert TaskRun.objects.get(task=task, scheduled_for=instant).details["into_run"] == buffered
    # Housekeeping leaves a buffered run alone while its predecessor runs.
    assert sql("SELECT sisy_fail_orphaned_runs_v1('30 seconds', 'sisy', 'sisy.run')") == [(0,)]
    assert sql(
        "SELECT sisy_finish_run_v1(%s, 'succeeded', '', '', 'sisy', 'sisy.run')", [first]
    ) == [(True,)]
    run = _run(buffered)
    assert run.job_id is not None and job_status(run.job_id) == "todo"
    assert "due_at" in run.details
    assert start_run(buffered) == "running"


def test_a_failed_attempt_waits_again_for_its_retry_with_its_history():
    task = make_task()
    make_due(task)
    ((_, run_id, _),) = claim()
    assert start_run(run_id) == "running"
    first_job = _run(run_id).job_id
    ((retry_at,),) = sql(
        "SELECT sisy_retry_run_v1(%s, 'ValueError: boom', 'Traceback...', '10 seconds',"
        " 'sisy', 'sisy.run')",
        [run_id],
    )
    run = _run(run_id)
    assert run.status == "queued" and run.error == "ValueError: boom"
    assert parse_datetime(run.details["due_at"]) == retry_at
    assert [a["attempt"] for a in run.details["attempts"]] == [1]
    assert run.details["attempts"][0]["error"] == "ValueError: boom"
    # A job of its own, fetched from the retry instant on.
    assert run.job_id != first_job and job_status(run.job_id) == "todo"
    ((scheduled_at, args),) = sql(
        "SELECT scheduled_at, args FROM procrastinate_jobs WHERE id = %s", [run.job_id]
    )
    assert scheduled_at == retry_at and json.loads(args)["run_ids"] == [run_id]
    # Not before its instant: the database says how long to wait.
    ((status, wait),) = sql(
        "SELECT status, wait FROM sisy_start_run_v1(%s, NULL, 'w1', '30 seconds', '60 seconds')",
        [run_id],
    )
    assert status == "early" and 9 < wait <= 10
    # Due later than the instant: its grace counts from then.
    sql(
        "UPDATE sisy_taskrun SET details = details || jsonb_build_object('due_at', now())"
        " WHERE id = %s",
        [run_id],
    )
    assert start_run(run_id) == "running"
    assert _run(run_id).details["attempt"] == 2


def test_a_run_past_its_timeout_is_timed_out_and_its_late_outcome_noted():
    task = make_task(options={"timeout": 0.001})
    make_due(task)
    ((_, run_id, _),) = claim()
    assert start_run(run_id) == "running"
    assert "deadline" in _run(run_id).details
    sql("SELECT pg_sleep(0.01)")
    assert sql("SELECT sisy_time_out_runs_v1('sisy', 'sisy.run')") == [(1,)]
    run = _run(run_id)
    assert (run.status, run.details["reason"]) == ("timed_out", "timed_out")
    assert run.error.startswith("timed out: still running ")
    # The thread carries on; when it returns, its outcome is noted, not applied.
    assert sql(
        "SELECT sisy_finish_run_v1(%s, 'succeeded', '', '', 'sisy', 'sisy.run')", [run_id]
    ) == [(False,)]
    run = _run(run_id)
    assert run.status == "timed_out" and run.details["returned"] == "succeeded"


def test_a_broken_task_stops_firing_until_its_row_is_fixed():
    task = make_task(options={"missed": "all"})
    make_due(task)
    ((_, broken_run, _),) = claim()
    make_due(task)
    ((_, waiting, _),) = claim()
    assert start_run(broken_run) == "running"
    assert sql(
        "SELECT sisy_break_task_v1(%s, 'unknown module: no prefix of ''x.y'' can be imported', '')",
        [broken_run],
    ) == [(True,)]
    task.refresh_from_db()
    assert task.broken and task.error.startswith("unknown module") and task.next_run is None
    assert _run(broken_run).error.startswith("broken: unknown module")
    assert _run(waiting).status == "cancelled"
    assert sql("SELECT state, error FROM sisy_task_status WHERE id = %s", [task.pk]) == [
        ("broken", task.error)
    ]
    # Not planned again while broken...
    assert not sql("SELECT 1 FROM sisy_task WHERE id = %s AND next_run IS NOT NULL", [task.pk])
    # ...until a writer changes its callable (or clears the error).
    sql(
        "UPDATE sisy_task SET callable_info = callable_info || '{\"note\": 1}' WHERE id = %s",
        [task.pk],
    )
    task.refresh_from_db()
    assert task.error == "" and not task.broken


def test_clearing_the_error_lets_the_planner_plan_the_task_again():
    task = make_task()
    sql("UPDATE sisy_task SET error = 'refused: x', next_run = NULL WHERE id = %s", [task.pk])
    assert not sql(QUERIES["tasks_to_plan"], {"limit": 10})
    sql("UPDATE sisy_task SET error = '' WHERE id = %s", [task.pk])
    assert [row[0] for row in sql(QUERIES["tasks_to_plan"], {"limit": 10})] == [task.pk]


@pytest.mark.parametrize(
    ("options", "valid"),
    [
        ('{"missed": "skip", "overlap": "buffer_one", "grace": 0}', True),
        ('{"timeout": 0.5, "retries": 3, "retry_delay": 1.5, "grace": null}', True),
        ('{"later_release_option": true}', True),  # keys of later releases
        ('{"missed": "sometimes"}', False),
        ('{"missed": 1}', False),
        ('{"overlap": "queue"}', False),
        ('{"grace": -1}', False),
        ('{"grace": "60"}', False),
        ('{"grace": 1e400}', False),
        ('{"timeout": 0}', False),
        ('{"retries": 1.5}', False),
        ('{"retries": 101}', False),
        ('{"retry_delay": 0}', False),
        ("[]", False),
    ],
)
def test_the_database_checks_the_policies_in_options(options, valid):
    task = make_task()
    change = "UPDATE sisy_task SET options = %s::jsonb WHERE id = %s"
    if valid:
        sql(change, [options, task.pk])
    else:
        with pytest.raises(IntegrityError, match="sisy_task_options_valid"), transaction.atomic():
            sql(change, [options, task.pk])
