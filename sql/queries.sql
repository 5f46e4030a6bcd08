-- Named queries of sisy_pg.store.Store, the only place that issues them.
-- They call the versioned functions of schema.sql (sisy_*_v1).
-- Each starts with a line "-- name --"; the next comment line says what it is for.

-- claim_due --
-- Lock the due tasks, with what runs each has waiting or running (see sisy_claim_due_v1)
SELECT id, schedule, timezone, start_running, end_running, iterations, fire_count,
       wait_for_schedule, allow_overlap, options, instant, claimed_at,
       waiting_run_id, waiting_for, waiting_count, running_run_id, running_for
  FROM sisy_claim_due_v1(%(limit)s, %(lead)s, %(stalled_after)s);

-- store_decisions --
-- Record the runs decided and the next instants (see sisy_store_decisions_v1)
SELECT sisy_store_decisions_v1(
           %(queue)s, %(task_name)s,
           %(run_task_ids)s::bigint[], %(run_instants)s::timestamptz[], %(run_statuses)s::text[],
           %(run_errors)s::text[], %(run_details)s::jsonb[],
           %(plan_task_ids)s::bigint[], %(plan_next_runs)s::timestamptz[],
           %(plan_finished)s::boolean[], %(plan_errors)s::text[], %(runs_per_job)s
       ) AS queued;

-- tasks_to_plan --
-- Lock tasks that a writer changed or created without next_run; "now" is the database's
SELECT id, schedule, timezone, start_running, end_running, iterations, fire_count,
       wait_for_schedule, clock_timestamp() AS now
  FROM sisy_task
 WHERE enabled AND next_run IS NULL AND finished_at IS NULL AND error = ''
 ORDER BY id
 LIMIT %(limit)s
   FOR NO KEY UPDATE SKIP LOCKED;

-- planner_state --
-- Seconds until the earliest next_run (negative: overdue), the earliest run
-- deadline (a task's timeout), the earliest end of a pause and the earliest
-- due_at of a run held for its jitter, and whether tasks wait to be planned
-- and backfills asked in SQL to be computed
SELECT EXTRACT(EPOCH FROM (
           (SELECT min(next_run) FROM sisy_task WHERE enabled AND next_run IS NOT NULL)
           - clock_timestamp()
       ))::float8 AS seconds_to_next,
       EXTRACT(EPOCH FROM (
           (SELECT min((details ->> 'deadline')::timestamptz) FROM sisy_taskrun
             WHERE status = 'running' AND details ? 'deadline')
           - clock_timestamp()
       ))::float8 AS seconds_to_deadline,
       EXTRACT(EPOCH FROM (
           (SELECT min(until) FROM sisy_task_pause WHERE until IS NOT NULL)
           - clock_timestamp()
       ))::float8 AS seconds_to_pause_end,
       EXTRACT(EPOCH FROM (
           (SELECT min((details ->> 'due_at')::timestamptz) FROM sisy_taskrun
             WHERE status = 'queued' AND job_id IS NULL AND details ? 'jitter'
               AND NOT details ? 'buffered_behind')
           - clock_timestamp()
       ))::float8 AS seconds_to_release,
       EXISTS (SELECT 1 FROM sisy_backfill WHERE expanded_at IS NULL) AS backfills,
       EXISTS (
           SELECT 1 FROM sisy_task
            WHERE enabled AND next_run IS NULL AND finished_at IS NULL AND error = ''
       ) AS pending;

-- end_pauses --
-- Resume the tasks whose pause ended (see sisy_end_pauses_v1)
SELECT task_id, label, until, resumed, refusal FROM sisy_end_pauses_v1(%(limit)s);

-- release_jittered_runs --
-- Defer the jobs of the runs held for their jitter, due within the lead time
SELECT sisy_release_jittered_runs_v1(
           %(lead)s, %(queue)s, %(task_name)s, %(runs_per_job)s
       ) AS count;

-- pending_backfills --
-- Lock the backfills asked in SQL whose instants are still to compute, with
-- their task's schedule
SELECT b.id, b.task_id, b.range_from, b.range_to, b.max_instants,
       t.schedule, t.timezone, t.start_running, t.end_running
  FROM sisy_backfill AS b
  JOIN sisy_task AS t ON t.id = b.task_id
 WHERE b.expanded_at IS NULL
 ORDER BY b.id
 LIMIT %(limit)s
   FOR UPDATE OF b SKIP LOCKED;

-- backfill_request --
-- A backfill just asked, with its task's schedule (the columns of pending_backfills)
SELECT b.id, b.task_id, b.range_from, b.range_to, b.max_instants,
       t.schedule, t.timezone, t.start_running, t.end_running
  FROM sisy_backfill AS b
  JOIN sisy_task AS t ON t.id = b.task_id
 WHERE b.id = %(backfill_id)s;

-- store_backfill --
-- Queue the runs of a backfill's instants (see sisy_store_backfill_v1)
SELECT instants, queued, already, error
  FROM sisy_store_backfill_v1(
           %(backfill_id)s, %(instants)s::timestamptz[], %(error)s, %(queue)s, %(task_name)s
       );

-- housekeeping_due --
-- Whether this planner does the cluster's housekeeping for this period
SELECT sisy_housekeeping_due_v1(%(every)s) AS due;

-- fail_orphaned_runs --
-- Close runs that can no longer happen (their worker or their job is gone)
SELECT sisy_fail_orphaned_runs_v1(%(stalled_after)s, %(queue)s, %(task_name)s) AS count;

-- time_out_runs --
-- Close the runs past their task's timeout
SELECT sisy_time_out_runs_v1(%(queue)s, %(task_name)s) AS count;

-- prune_runs --
-- Delete old finished runs and their jobs (SISY_RUN_RETENTION_DAYS)
SELECT sisy_prune_runs_v1(%(retention)s, %(limit)s) AS count;

-- prune_task_changes --
-- Delete the changes of tasks as old as the runs pruned (see sisy_prune_task_changes_v1)
SELECT sisy_prune_task_changes_v1(%(retention)s, %(limit)s) AS count;

-- send_probe --
-- A planner's self-addressed notification: does its LISTEN connection get them?
SELECT pg_notify('sisy_task_changed', %(payload)s);

-- load --
-- What the cluster got through lately, and how far behind it is (see sisy_load_v1)
SELECT window_seconds, due, executed, not_run, overdue_tasks, max_lag_seconds
  FROM sisy_load_v1(%(window)s);

-- stall_activity --
-- A stalled backend and the sessions that block it (pg_blocking_pids), seen
-- from another connection: what each does, and for how long (a blocker: its
-- transaction, which holds the lock; the stalled backend: its statement)
WITH blocking AS MATERIALIZED (
    SELECT pg_blocking_pids(%(pid)s) AS pids
)
SELECT a.pid, a.pid <> %(pid)s AS blocker, a.application_name, a.state,
       a.wait_event_type, a.wait_event, left(a.query, 80) AS query,
       extract(epoch FROM clock_timestamp() - CASE WHEN a.pid = %(pid)s
           THEN a.query_start ELSE coalesce(a.xact_start, a.query_start) END)::float8 AS seconds
  FROM pg_stat_activity AS a, blocking
 WHERE a.pid = %(pid)s OR a.pid = ANY (blocking.pids)
 ORDER BY a.pid <> %(pid)s, a.pid;

-- database_now --
-- The database's clock (epoch seconds), which a runner's waits are measured against
SELECT extract(epoch FROM clock_timestamp())::float8 AS now;

-- start_runs --
-- Start the runs of a job (see sisy_start_run_v1), in the order of their tasks
-- (the overlap check locks each task), and read the row of the task of each
-- run that starts: one statement for them all
SELECT s.run_id, s.status AS run_status, s.scheduled_for AS run_scheduled_for,
       s.attempt AS run_attempt, s.started_at AS run_started_at, s.wait AS run_wait,
       t.*
  FROM (SELECT r.id, r.task_id FROM sisy_taskrun AS r
         WHERE r.id = ANY (%(run_ids)s::bigint[]) ORDER BY r.task_id, r.id) AS r
 CROSS JOIN LATERAL (
       SELECT r.id AS run_id, started.*
         FROM sisy_start_run_v1(
                  r.id, %(job_id)s, %(worker)s, %(stalled_after)s, %(default_grace)s
              ) AS started
       ) AS s
  LEFT JOIN sisy_task AS t ON t.id = s.task_id AND s.status = 'running';

-- finish_run --
-- Record how a run ended; release the run buffered behind it
SELECT sisy_finish_run_v1(
           %(run_id)s, %(status)s, %(error)s, %(traceback)s, %(queue)s, %(task_name)s
       ) AS finished;

-- retry_run --
-- A failed attempt to be retried after a delay: the run waits again; returns when
SELECT sisy_retry_run_v1(
           %(run_id)s, %(error)s, %(traceback)s, %(retry_in)s, %(queue)s, %(task_name)s
       ) AS retry_at;

-- break_task --
-- The callable cannot be resolved: fail the run, mark the task broken
SELECT sisy_break_task_v1(%(run_id)s, %(reason)s, %(traceback)s) AS broke;

-- tasks_of_runs --
-- The task of each run of a job whose arguments do not say it
SELECT id, task_id FROM sisy_taskrun WHERE id = ANY (%(run_ids)s::bigint[]);

-- skip_runs_over_share --
-- Runs a runner will not start: their task holds its share of the worker's slots
SELECT run_id FROM sisy_skip_runs_over_share_v1(
           %(run_ids)s::bigint[], %(job_id)s, %(worker)s, %(error)s
       ) AS run_id;

-- interrupt_runs --
-- Runs whose worker stopped before their callable returned
SELECT run_id FROM sisy_interrupt_runs_v1(%(run_ids)s::bigint[], %(error)s) AS run_id;

-- worker_seen --
-- A worker's state, for health (see sisy_worker)
SELECT sisy_worker_seen_v1(
           %(worker_id)s, %(name)s, %(queues)s::text[], %(plans)s, %(concurrency)s,
           %(slots_held)s, %(slots_stuck)s, %(notifications)s, %(details)s
       );

-- send_job_probe --
-- A worker's self-addressed notification on procrastinate's channel: does its job listener get them?
SELECT pg_notify(%(channel)s, %(payload)s);

-- worker_gone --
-- A worker stopped
SELECT sisy_worker_gone_v1(%(worker_id)s);
