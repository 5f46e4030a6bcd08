"""A task's ``priority`` option: claimed first, deferred as procrastinate's job priority.

The SQL side is checked on the database alone (the claim's order and plan,
the jobs' priority and arguments); the issue's probe runs a real worker: a
canary with a priority, created beside 3,000 every-second tasks that
overload the worker, starts within 2 s.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest
from django.db import connection

from sisy_pg import callables
from sisy_pg.models import TaskRun, task_with_callable
from tests.conftest import wait_until
from tests.testapp import jobs

RECORD = json.dumps(callables.describe(jobs.record))


def sql(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


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


def claim(limit=100):
    return [
        task_id
        for (task_id,) in sql(
            "SELECT id FROM sisy_claim_due_v1(%s, interval '0', interval '30 seconds')", [limit]
        )
    ]


# --- the claim ------------------------------------------------------------------------


@pytest.mark.django_db
def test_claim_takes_the_highest_priority_first_among_thousands_due():
    flood = insert_tasks(3000, next_run="now() - interval '10 seconds'")
    low = insert_tasks(1, next_run="now() - interval '1 hour'", options='{"priority": -5}')
    [urgent] = insert_tasks(1, next_run="now() - interval '1 second'", options='{"priority": 50}')
    [less] = insert_tasks(1, next_run="now() - interval '2 seconds'", options='{"priority": 10}')

    claimed = claim(100)
    assert claimed[:2] == [urgent, less]  # the latest due, but first
    assert set(claimed[2:]) <= set(flood)
    assert not set(low) & set(claimed)  # due the longest, but below the others


@pytest.mark.django_db
def test_claim_reads_the_range_of_the_due_index_then_sorts_it():
    """The cost follows what is due: an index range, never a scan of every task defined."""
    insert_tasks(20_000, next_run="now() + interval '1 day'")
    insert_tasks(200, next_run="now() - interval '1 second'", options='{"priority": 3}')
    sql("ANALYZE sisy_task")
    ((body,),) = sql("SELECT prosrc FROM pg_proc WHERE proname = 'sisy_claim_due_v1'")
    for name, value in [
        ("p_limit", "100"),
        ("p_lead", "interval '0.2 seconds'"),
        ("p_stalled_after", "interval '30 seconds'"),
    ]:
        body = body.replace(name, value)
    plan = "\n".join(line for (line,) in sql("EXPLAIN " + body))
    assert "Index Scan using sisy_task_due_idx on sisy_task" in plan or (
        "Bitmap Index Scan on sisy_task_due_idx" in plan
    ), plan
    assert "Seq Scan on sisy_task " not in plan, plan
    assert "Sort" in plan, plan


# --- the jobs -------------------------------------------------------------------------


@pytest.mark.django_db
def test_jobs_carry_their_tasks_priority_and_task_ids():
    [plain, other] = insert_tasks(2)
    [urgent, also_urgent] = insert_tasks(2, options='{"priority": 100}', label="urgent")
    [low] = insert_tasks(1, options='{"priority": -1}', label="low")
    tasks = [plain, urgent, other, also_urgent, low, plain]
    instants = ["2030-01-01 10:00:00+00"] * 5 + ["2030-01-01 10:00:01+00"]
    run_ids = [
        run_id
        for (run_id,) in sql(
            """INSERT INTO sisy_taskrun (task_id, scheduled_for)
               SELECT t, i FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(t, i)
               RETURNING id""",
            [tasks, instants],
        )
    ]
    ((job_ids,),) = sql(
        "SELECT sisy_defer_run_jobs_v1('sisy', 'sisy.run', %s, %s::timestamptz[], 10, NULL)",
        [run_ids, instants],
    )
    jobs_of = dict(zip(run_ids, job_ids, strict=True))
    rows = sql(
        "SELECT id, priority, args FROM procrastinate_jobs WHERE id = ANY (%s) ORDER BY id",
        [job_ids],
    )
    by_job = {job_id: (priority, json.loads(args)) for job_id, priority, args in rows}
    # One job per (instant, priority): the urgent runs together, at priority 100.
    assert len(rows) == 4, rows
    assert jobs_of[run_ids[1]] == jobs_of[run_ids[3]]
    assert by_job[jobs_of[run_ids[1]]][0] == 100
    assert by_job[jobs_of[run_ids[4]]][0] == -1
    assert by_job[jobs_of[run_ids[0]]][0] == 0
    assert jobs_of[run_ids[0]] == jobs_of[run_ids[2]] != jobs_of[run_ids[5]]
    for job_id, (_, args) in by_job.items():
        mine = [i for i, job in enumerate(job_ids) if job == job_id]
        assert args["run_ids"] == [run_ids[i] for i in mine]
        assert args["task_ids"] == [tasks[i] for i in mine]  # parallel to run_ids
        assert set(args) == {"run_ids", "task_ids", "at"}


# --- the canary -----------------------------------------------------------------------

FLOOD = 3000


def overdue_tasks():
    ((count,),) = sql(
        "SELECT count(*) FROM sisy_task "
        "WHERE enabled AND next_run < clock_timestamp() - interval '2 seconds'"
    )
    return count


def recent_lags():
    """Lags (s) of the runs that started in the last 3 s."""
    return [
        lag
        for (lag,) in sql(
            "SELECT extract(epoch FROM started_at - scheduled_for)::float8 FROM sisy_taskrun "
            "WHERE started_at > clock_timestamp() - interval '3 seconds'"
        )
    ]


def first_start_after_creation(options):
    """Create a one-second canary with ``options``; seconds from its creation to its first start."""
    canary = task_with_callable(jobs.record, label=f"canary {options}", schedule="* * * * * *")
    canary.options = options
    canary.save()
    canary.refresh_from_db()
    run = wait_until(
        lambda: (
            TaskRun.objects.filter(task=canary, started_at__isnull=False)
            .order_by("started_at")
            .first()
        ),
        timeout=60,
        interval=0.05,
    )
    canary.enabled = False
    canary.save(update_fields=["enabled"])
    return (run.started_at - canary.created_at).total_seconds(), run


@pytest.mark.e2e
@pytest.mark.long
def test_a_canary_with_a_priority_starts_within_2_s_beside_3000_every_second_tasks(
    start_worker,
):
    worker = start_worker("w1", "--concurrency", "8")
    insert_tasks(FLOOD, schedule="* * * * * *")  # planned by the worker
    started = time.monotonic()
    # Overloaded: the runs starting now are seconds late.
    wait_until(lambda: statistics.median(recent_lags() or [0]) > 2, timeout=90, interval=0.5)
    overloaded_after = time.monotonic() - started
    lags = recent_lags()
    overdue = overdue_tasks()

    # Without a priority first: the one with a priority then meets the worst of it.
    without_priority, plain_run = first_start_after_creation({})
    lags_before = recent_lags()
    with_priority, priority_run = first_start_after_creation({"priority": 100})
    lags_after = recent_lags()
    sql("UPDATE sisy_task SET enabled = false")
    print(
        f"\noverloaded after {overloaded_after:.1f} s: {overdue} of {FLOOD} tasks overdue by > 2 s, "
        f"median lag {statistics.median(lags or [0]):.1f} s ({len(lags)} runs in 3 s); "
        f"canary with priority 100 first started {with_priority:.2f} s after its creation "
        f"(lag {(priority_run.started_at - priority_run.scheduled_for).total_seconds():.2f} s), "
        f"without priority {without_priority:.2f} s "
        f"(lag {(plain_run.started_at - plain_run.scheduled_for).total_seconds():.2f} s); "
        f"median lag when it was created {statistics.median(lags_before or [0]):.1f} s, "
        f"then {statistics.median(lags_after or [0]):.1f} s"
    )
    dump = worker.output()[-5000:]
    assert with_priority < 2, dump
