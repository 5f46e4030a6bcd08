"""Priority in the planner's claim: highest first among thousands due, by an index range, carried onto the jobs."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import insert_tasks, sql


def claim(limit=100):
    return [
        task_id
        for (task_id,) in sql(
            "SELECT id FROM sisy_claim_due_v1(%s, interval '0', interval '30 seconds')", [limit]
        )
    ]


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
