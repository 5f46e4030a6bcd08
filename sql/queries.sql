-- Named queries of sisy_pg.store.Store, the only place that issues them.
-- They call the versioned functions of schema.sql (sisy_*_v1).
-- Each starts with a line "-- name --"; the next comment line says what it is for.

-- claim_due --
-- Fire every due task (see sisy_claim_due_v1 in schema.sql)
SELECT id, schedule, timezone, start_running, end_running, iterations, fire_count,
       wait_for_schedule, fired_for, run_id, stale, claimed_at
  FROM sisy_claim_due_v1(%(limit)s, %(lead)s, %(catchup)s, %(queue)s, %(task_name)s);

-- tasks_to_plan --
-- Lock tasks that a writer changed or created without next_run; "now" is the database's
SELECT id, schedule, timezone, start_running, end_running, iterations, fire_count,
       wait_for_schedule, clock_timestamp() AS now
  FROM sisy_task
 WHERE enabled AND next_run IS NULL AND finished_at IS NULL AND schedule_error = ''
 ORDER BY id
 LIMIT %(limit)s
   FOR NO KEY UPDATE SKIP LOCKED;

-- set_plans --
-- Store the planner's answers: the next instant, the end of a task, or why it cannot be planned
UPDATE sisy_task AS t
   SET next_run = plan.next_run,
       enabled = t.enabled AND NOT plan.finished,
       finished_at = CASE WHEN plan.finished THEN clock_timestamp() ELSE t.finished_at END,
       schedule_error = plan.error
  FROM unnest(
           %(ids)s::bigint[], %(next_runs)s::timestamptz[],
           %(finished)s::boolean[], %(errors)s::text[]
       ) AS plan(id, next_run, finished, error)
 WHERE t.id = plan.id;

-- planner_state --
-- Seconds until the earliest next_run (negative: overdue), and whether tasks wait to be planned
SELECT EXTRACT(EPOCH FROM (
           (SELECT min(next_run) FROM sisy_task WHERE enabled AND next_run IS NOT NULL)
           - clock_timestamp()
       ))::float8 AS seconds_to_next,
       EXISTS (
           SELECT 1 FROM sisy_task
            WHERE enabled AND next_run IS NULL AND finished_at IS NULL AND schedule_error = ''
       ) AS pending;

-- housekeeping_due --
-- Whether this planner does the cluster's housekeeping for this period
SELECT sisy_housekeeping_due_v1(%(every)s) AS due;

-- fail_orphaned_runs --
-- Close runs that can no longer happen (their worker or their job is gone)
SELECT sisy_fail_orphaned_runs_v1(%(stalled_after)s) AS count;

-- prune_runs --
-- Delete old finished runs and their jobs (SISY_RUN_RETENTION_DAYS)
SELECT sisy_prune_runs_v1(%(retention)s, %(limit)s) AS count;

-- seconds_until --
-- How long until an instant (epoch seconds), on the database's clock
SELECT extract(epoch FROM to_timestamp(%(instant)s) - clock_timestamp())::float8;

-- start_run --
-- Move a queued run to running (or skipped); see sisy_start_run_v1
SELECT status, task_id, scheduled_for
  FROM sisy_start_run_v1(%(run_id)s, %(job_id)s, %(worker)s, %(stalled_after)s);

-- finish_run --
-- Record how a run ended
UPDATE sisy_taskrun
   SET status = %(status)s, finished_at = clock_timestamp(),
       error = %(error)s, traceback = %(traceback)s
 WHERE id = %(run_id)s AND status = 'running';
