"""The scale scenario's fetch: procrastinate_fetch_job_v2 of an unrelated job, timed on the server.

Its yardstick for the planner's cost, :func:`parked`: the design sisy-pg does
not use, one parked future procrastinate job per task.
"""

from __future__ import annotations

import statistics

import psycopg

from bench.core import Bench

# procrastinate's fetch called n times on the server, each in a subtransaction
# rolled back (the job stays to do): its duration on the server's clock.
FETCH_LOOP = """
CREATE OR REPLACE FUNCTION pg_temp.sisy_bench_fetch(p_worker bigint, p_n integer)
    RETURNS TABLE (ms float8, fetched boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    started timestamptz;
    job procrastinate_jobs;
BEGIN
    FOR i IN 1 .. p_n LOOP
        fetched := false;
        started := clock_timestamp();
        BEGIN
            job := procrastinate_fetch_job_v2(NULL, p_worker);
            fetched := job.id IS NOT NULL;
            RAISE EXCEPTION 'roll back' USING ERRCODE = 'SB001';
        EXCEPTION WHEN SQLSTATE 'SB001' THEN
            NULL;
        END;
        ms := extract(epoch FROM clock_timestamp() - started) * 1000;
        RETURN NEXT;
    END LOOP;
END;
$$
"""


def samples(bench: Bench) -> list[float]:
    """Ms of procrastinate_fetch_job_v2 (all queues) fetching one unrelated job, timed on
    the server's clock, each call in a subtransaction that is rolled back; after 50 of
    warm-up. (Timed by the client, a round trip on a loaded 2-core machine varied 2x
    between two runs on the same empty table.)"""
    bench.db.q(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT 'unrelated', 'bench.unrelated', '{}' "
        "WHERE NOT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE task_name = 'bench.unrelated')"
    )
    # Vacuumed each time: the visibility map and hint bits, not the state
    # left by the previous step, decide the fetch's cost.
    bench.db.q("VACUUM (ANALYZE) procrastinate_jobs, procrastinate_events, procrastinate_workers")
    bench.db.q(FETCH_LOOP)
    bench.db.quiesce()
    worker_id = bench.db.one("SELECT procrastinate_register_worker_v1()")
    try:
        rows = bench.db.q(
            "SELECT ms, fetched FROM pg_temp.sisy_bench_fetch(%s, %s)",
            [worker_id, 50 + bench.mode.fetch_repeat],
        )
    finally:
        bench.db.q("SELECT procrastinate_unregister_worker_v1(%s)", [worker_id])
    if not all(fetched for _, fetched in rows):
        raise RuntimeError("procrastinate_fetch_job_v2 fetched nothing")
    return [ms for ms, _ in rows[50:]]


def parked(bench: Bench, size: int) -> float:
    """The yardstick design: one parked future procrastinate job per task, some due."""
    # Emptied (not analyzed) first, on a session of its own: the foreign-key
    # checks of the events the insert writes are planned for a table of
    # unknown size (an index scan), not for the one row it had (a sequential
    # scan per event: quadratic).
    bench.db.q("TRUNCATE procrastinate_jobs CASCADE")
    with psycopg.connect(bench.db.url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO procrastinate_jobs (queue_name, task_name, args, scheduled_at)
           SELECT 'parked', 'bench.parked', '{}', now() + interval '1 day' + n * interval '1 s'
             FROM generate_series(1, %s) AS n""",
            [size],
        )
    result = statistics.median(samples(bench))
    bench.db.q("TRUNCATE procrastinate_jobs CASCADE")
    return result
