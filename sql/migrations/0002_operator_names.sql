-- sisy-pg 0002_operator_names: the operators' names for psql, and a description
-- of every sisy function and view.
--
-- Applied by the Django migration sisy.0002_operator_names (by this file's
-- name), the first change after release 0.1.0 froze 0001_initial; never edited
-- once released. It adds functions and comments only: no column, so Sisy
-- users' data migrations (depending on 0001_initial) may run before or after it
-- (docs/concepts.md#the-upgrade-rule).
--
-- The operators' names: sisy_run_now, sisy_pause, sisy_resume,
-- sisy_clear_error, sisy_backfill, sisy_health and sisy_metrics, unversioned,
-- each calling the current version of its function with the same arguments,
-- defaults and result. They are what people type at psql and write in scripts
-- and probes, and they stay: a release that adds sisy_pause_v3 points
-- sisy_pause at it (CREATE OR REPLACE FUNCTION, with its COMMENT, in a new
-- migration), and what people type and the grants of the names go on
-- working. sisy-pg's own code calls the versions it was written for.
--
-- Plain sisy_* names beside the tables, not a schema of sisy's own as pg_cron
-- has (cron.schedule): pg_cron is an extension, installed once per database
-- into the schema it owns, where sisy-pg is a Django app whose migrations put
-- every object, each named sisy_*, in the schema of the connection. A schema
-- of fixed name would be one for every sisy-pg of the database (two projects,
-- or tenants, each in its own schema, would fight over sisy.pause) and would
-- need grants and a search_path of its own; beside the tables, a session that
-- finds sisy_task finds sisy_pause, and \df sisy* lists each name with the
-- versions it calls.
--
-- COMMENT ON every sisy function and view (0001_initial described none), so
-- that \df+ sisy* and \dv+ sisy* explain them: what each does, its arguments
-- and what it returns. The functions and views operators use say so; the
-- others begin "internal:" and say which part of sisy-pg calls them.
--
-- Every function pins its search_path (SET search_path FROM CURRENT) to the
-- one set here: the schemas this file is applied in, by name (not "$user"),
-- then pg_temp. PostgreSQL searches pg_temp first unless the path lists it:
-- a session's TEMP TABLE sisy_taskrun would stand in for the real one in the
-- triggers on its writes. So neither a session's own objects nor a writer's
-- search_path can redirect a function (docs/security.md). Until the end of
-- this transaction only.
SELECT set_config(
    'search_path',
    (SELECT string_agg(quote_ident(s.name), ', ' ORDER BY s.position)
       FROM unnest(current_schemas(false)) WITH ORDINALITY AS s(name, position)
      -- a temporary schema is another session's tomorrow
      WHERE s.name !~ '^pg_temp_')
        || ', pg_temp',
    true
);
-- Applied outside a transaction (psql -f without -1), the setting above would
-- be gone by the next statement, and the functions would pin a path that
-- searches pg_temp first: refuse.
DO $$
BEGIN
    IF current_setting('search_path') !~ ', pg_temp$'
       OR current_setting('search_path') ~ 'pg_temp_'
    THEN
        RAISE EXCEPTION 'sisy: apply this file in one transaction (psql -1 -v ON_ERROR_STOP=1 -f ...)'
            USING HINT = 'Its search_path, with pg_temp last, holds for one transaction only.';
    END IF;
END;
$$;

-- The operators' names ---------------------------------------------------------------------
-- What to type at psql, and to write in scripts and probes (docs/sql.md):
-- sisy_run_now, sisy_pause, sisy_resume, sisy_clear_error, sisy_backfill,
-- sisy_health and sisy_metrics. Each calls the current version of its
-- function, with the same arguments, defaults and result (a test keeps them
-- equal); a release that adds a version points the name at it (CREATE OR
-- REPLACE FUNCTION, with its COMMENT, in a new migration) and changes nothing
-- else. SECURITY DEFINER, as the functions they call: EXECUTE on a name is
-- all a role needs (sql/roles.sql), and that grant outlives a change of
-- version.

CREATE FUNCTION sisy_run_now(p_task text)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_run_now_v1(p_task);
$$;
COMMENT ON FUNCTION sisy_run_now(text) IS
    'Runs a task once, now, then as scheduled. p_task: its label, or its id. Returns one row: '
    'task_id, label, done, refusal (why it was left alone: paused, finished, broken; NULL when '
    'done). Raises no_data_found for an unknown task. Calls sisy_run_now_v1. docs/sql.md';

CREATE FUNCTION sisy_pause(p_task text, p_note text DEFAULT '', p_until timestamptz DEFAULT NULL)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_pause_v2(p_task, p_note, p_until);
$$;
COMMENT ON FUNCTION sisy_pause(text, text, timestamptz) IS
    'Pauses a task: it stops firing and its queued runs are cancelled. p_task: its label, or '
    'its id; p_note: why (optional); p_until: when the planners resume it by themselves '
    '(optional, in the future). A paused task gets the new note and end. Returns one row: '
    'task_id, label, done, refusal (finished, already_paused; NULL when done). Calls '
    'sisy_pause_v2. docs/pausing.md';

CREATE FUNCTION sisy_resume(p_task text)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_resume_v1(p_task);
$$;
COMMENT ON FUNCTION sisy_resume(text) IS
    'Resumes a paused task: the planners plan it again at once (a broken task has its error '
    'cleared: it is tried again). p_task: its label, or its id. Returns one row: task_id, '
    'label, done, refusal (finished, not_paused, broken; NULL when done). Calls sisy_resume_v1. '
    'docs/sql.md';

CREATE FUNCTION sisy_clear_error(p_task text)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_clear_error_v1(p_task);
$$;
COMMENT ON FUNCTION sisy_clear_error(text) IS
    'Clears the error of a broken task, once its cause is fixed: the planners plan it again. '
    'p_task: its label, or its id. Returns one row: task_id, label, done, refusal (not_broken; '
    'NULL when done). Calls sisy_clear_error_v1. docs/sql.md';

CREATE FUNCTION sisy_backfill(
    p_task text, p_from timestamptz, p_to timestamptz, p_limit integer DEFAULT NULL
)
    RETURNS TABLE (backfill_id bigint, task_id bigint, label varchar, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_backfill_v1(p_task, p_from, p_to, p_limit);
$$;
COMMENT ON FUNCTION sisy_backfill(text, timestamptz, timestamptz, integer) IS
    'Runs each past instant of a task''s schedule from p_from through p_to (no later than now) '
    'once, however often it is asked, one at a time. p_task: its label, or its id; p_limit: the '
    'most instants (NULL: SISY_BACKFILL_LIMIT). A planner computes the instants a moment later '
    '(the table sisy_backfill). Returns one row: backfill_id, task_id, label, refusal (paused, '
    'finished, broken: nothing asked; NULL when asked). Calls sisy_backfill_v1. '
    'docs/backfill.md';

CREATE FUNCTION sisy_health(
    p_stalled_after interval DEFAULT '30 seconds',
    p_max_overdue interval DEFAULT '60 seconds',
    p_recent interval DEFAULT '5 minutes'
)
    RETURNS TABLE (check_name text, ok boolean, subjects text[], facts jsonb)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_health_v1(p_stalled_after, p_max_overdue, p_recent);
$$;
COMMENT ON FUNCTION sisy_health(interval, interval, interval) IS
    'What is wrong with sisy now, as manage.py sisy health says: one row per check, check_name '
    '(workers, unplanned, overdue, broken, starving, overrun, stuck, slots_full, slots_stuck, '
    'notifications, load), with ok, subjects (task labels or worker names) and facts. '
    'p_stalled_after: a worker silent longer is dead; p_max_overdue: how late a next run may '
    'be; p_recent: the history judged. Calls sisy_health_v1. docs/operations.md';

CREATE FUNCTION sisy_metrics(p_stalled_after interval DEFAULT '30 seconds')
    RETURNS TABLE (metric text, labels jsonb, le float8, value float8)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_metrics_v1(p_stalled_after);
$$;
COMMENT ON FUNCTION sisy_metrics(interval) IS
    'The Prometheus metrics of /sisy/metrics, as rows: metric, labels (jsonb), le (a histogram '
    'bucket''s bound), value. Runs by status and reason, lag and duration histograms, tasks by '
    'state, live workers, runs waiting and running, the oldest overdue instant. '
    'p_stalled_after: a worker silent longer is not counted. Calls sisy_metrics_v1. '
    'docs/metrics.md';

-- No sisy function is everyone's to call, as 0001_initial's section Privileges says.
REVOKE EXECUTE ON FUNCTION
    sisy_run_now(text),
    sisy_pause(text, text, timestamptz),
    sisy_resume(text),
    sisy_clear_error(text),
    sisy_backfill(text, timestamptz, timestamptz, integer),
    sisy_health(interval, interval, interval),
    sisy_metrics(interval)
    FROM PUBLIC;

-- A database upgraded from 0.1.0 may have roles that sql/roles.sql gave a
-- version: each gets the name that calls it, so that what an operator or a
-- probe could do before the upgrade it can do by name after, without a second
-- run of roles.sql. Nothing to do in a new database (no role has a version yet).
DO $$
DECLARE
    pair record;
    holder regrole;
BEGIN
    FOR pair IN
        SELECT * FROM (VALUES
            ('sisy_run_now(text)', 'sisy_run_now_v1(text)'),
            ('sisy_pause(text, text, timestamptz)', 'sisy_pause_v2(text, text, timestamptz)'),
            ('sisy_resume(text)', 'sisy_resume_v1(text)'),
            ('sisy_clear_error(text)', 'sisy_clear_error_v1(text)'),
            ('sisy_backfill(text, timestamptz, timestamptz, integer)',
             'sisy_backfill_v1(text, timestamptz, timestamptz, integer)'),
            ('sisy_health(interval, interval, interval)',
             'sisy_health_v1(interval, interval, interval)'),
            ('sisy_metrics(interval)', 'sisy_metrics_v1(interval)')
        ) AS pairs(name, version)
    LOOP
        FOR holder IN
            SELECT DISTINCT acl.grantee::regrole
              FROM pg_proc AS p, aclexplode(p.proacl) AS acl
             WHERE p.oid = pair.version::regprocedure
               AND acl.privilege_type = 'EXECUTE'
               AND acl.grantee <> 0  -- PUBLIC, which 0001_initial revoked
               AND acl.grantee <> p.proowner
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', pair.name, holder);
        END LOOP;
    END LOOP;
END;
$$;

-- Descriptions -------------------------------------------------------------------------
-- Of the functions and views of 0001_initial, in the order of sql/schema.sql.

COMMENT ON FUNCTION sisy_json_limits_error_v1(jsonb) IS
    'internal: called by the CHECK constraints of sisy_task on every write, and by '
    'sisy_start_run_v1. Why JSON document p_document (userdata, options, callable_info) is '
    'beyond the limits: nested more than 32 levels, a number of more than 4000 digits, more '
    'than 1 MiB of JSON text. NULL when it is not.';

COMMENT ON FUNCTION sisy_defer_run_jobs_v1(
    text, text, bigint[], timestamptz[], integer, timestamptz
) IS
    'internal: called by the planner''s functions. Defers the procrastinate jobs (task '
    'p_task_name, queue p_queue unless a task''s options.queue says another) that execute runs '
    'p_run_ids due at p_ats, up to p_runs_per_job runs a job, fetched from p_scheduled_at on. '
    'Returns each run''s job id.';

COMMENT ON FUNCTION sisy_cancel_run_job_v1(bigint) IS
    'internal: called by the triggers on sisy_taskrun. Cancels procrastinate job p_job_id if no '
    'worker has fetched it yet.';

COMMENT ON FUNCTION sisy_job_alive_v1(bigint, interval) IS
    'internal: called by the planner''s functions and the health probe. Whether job p_job_id is '
    'being executed by a worker whose heartbeat is younger than p_stalled_after.';

COMMENT ON FUNCTION sisy_job_pending_v1(bigint, interval) IS
    'internal: called by the planner''s functions and the Django tasks backend. Whether job '
    'p_job_id may still run: not fetched yet, or executed by a live worker (sisy_job_alive_v1).';

COMMENT ON FUNCTION sisy_run_alive_v1(bigint, jsonb, interval) IS
    'internal: called by the planner''s functions and the housekeeping. Whether a running run '
    'is still in progress, by its job p_job_id and its details p_details.';

COMMENT ON FUNCTION sisy_delete_finished_jobs_v1(bigint[]) IS
    'internal: called by the retention (sisy_prune_runs_v1). Deletes the procrastinate jobs '
    'p_job_ids that ended (never one to do or doing). Returns how many.';

COMMENT ON FUNCTION sisy_live_workers_v1(interval) IS
    'internal: granted to the worker role (sisy_health judges the workers). How many '
    'procrastinate workers have a heartbeat younger than p_stalled_after.';

COMMENT ON FUNCTION sisy_worker_heartbeats_v1() IS
    'internal: called by sisy_health_v1 and sisy_metrics_v1. procrastinate''s workers '
    '(worker_id) and their last heartbeat.';

COMMENT ON FUNCTION sisy_task_before_write_v1() IS
    'internal: the trigger sisy_task_before_write_v1, before each INSERT or UPDATE of '
    'sisy_task. Fills an empty label and time zone, refuses an unknown time zone, and clears '
    'next_run when what decides the instants changes (the planners re-plan it).';

COMMENT ON FUNCTION sisy_task_after_disable_v1() IS
    'internal: the trigger sisy_task_after_disable_v1. A task disabled: its queued runs are '
    'cancelled (reason disabled), and their jobs.';

COMMENT ON FUNCTION sisy_task_before_delete_v1() IS
    'internal: the trigger sisy_task_before_delete_v1. A task deleted takes its runs with it.';

COMMENT ON FUNCTION sisy_task_notify_v1() IS
    'internal: the trigger sisy_task_notify_v1, after each statement that writes sisy_task. '
    'Notifies the channel sisy_task_changed: the workers'' planners re-plan at once.';

COMMENT ON FUNCTION sisy_taskrun_cancel_job_v1() IS
    'internal: the triggers sisy_taskrun_cancel_job_v1 and sisy_taskrun_delete_cancels_job_v1. '
    'A queued run cancelled or deleted cancels its job, unless the job carries other queued '
    'runs.';

COMMENT ON FUNCTION sisy_taskrun_cancel_all_jobs_v1() IS
    'internal: the trigger sisy_taskrun_truncate_cancels_jobs_v1. A TRUNCATE of sisy_taskrun '
    'cancels the jobs of its queued runs.';

COMMENT ON FUNCTION sisy_taskrun_notify_v1() IS
    'internal: the trigger sisy_taskrun_notify_v1. Notifies the channel sisy_run_changed of '
    'each run inserted or whose status changed (run_id, task_id, status).';

COMMENT ON FUNCTION sisy_claim_due_v1(integer, interval, interval) IS
    'internal: called by the planner (sql/queries.sql, claim_due). Locks up to p_limit tasks '
    'due within p_lead, highest priority first, with what each needs to decide: its planning '
    'columns, the instant due, its runs waiting and running (on workers alive within '
    'p_stalled_after).';

COMMENT ON FUNCTION sisy_store_decisions_v1(
    text, text, bigint[], timestamptz[], text[], text[], jsonb[], bigint[], timestamptz[],
    boolean[], text[], integer
) IS
    'internal: called by the planner (store_decisions). Records the planner''s decisions: the '
    'runs to execute (queued, with their jobs) or the instants not run (with why), and each '
    'task''s next instant, end or error. Returns the number of runs queued.';

COMMENT ON FUNCTION sisy_policy_v1(jsonb, boolean, interval) IS
    'internal: called by the planner''s and the runners'' functions. A task''s policies read '
    'from its options p_options (missed, overlap, grace, timeout, retries, retry_delay, '
    'priority, jitter, queue), with their defaults: p_allow_overlap, p_default_grace '
    '(SISY_GRACE).';

COMMENT ON FUNCTION sisy_start_run_v1(bigint, bigint, text, interval, interval) IS
    'internal: called by the runner (start_runs). Starts run p_run_id under job p_job_id on '
    'worker p_worker, or says why not (early, busy, missed, skipped, broken, '
    'started_elsewhere). Returns the run''s status afterwards, its attempt, when it started and '
    'the seconds to wait.';

COMMENT ON FUNCTION sisy_release_buffered_run_v1(bigint, text, text) IS
    'internal: called when a run ends. Defers the job of the run of task p_task_id buffered '
    'behind it (options.overlap buffer_one), on queue p_queue for task p_task_name.';

COMMENT ON FUNCTION sisy_finish_run_v1(bigint, text, text, text, text, text) IS
    'internal: called by the runner (finish_run). Records how run p_run_id ended (p_status '
    'succeeded or failed, p_error, p_traceback) and releases the run buffered behind it. False '
    'when the run was not running.';

COMMENT ON FUNCTION sisy_retry_run_v1(bigint, text, text, interval, text, text) IS
    'internal: called by the runner (retry_run). A failed attempt of run p_run_id, retried '
    'after p_retry_in with a job of its own. Returns the retry instant, or NULL when the run '
    'was not running.';

COMMENT ON FUNCTION sisy_break_task_v1(bigint, text, text) IS
    'internal: called by the runner (break_task). Run p_run_id''s callable cannot be resolved: '
    'the run fails and its task is broken (sisy_task.error: p_reason). True when this call '
    'broke it.';

COMMENT ON FUNCTION sisy_skip_runs_over_share_v1(bigint[], bigint, text, text) IS
    'internal: called by the runner (skip_runs_over_share). Records runs p_run_ids not started '
    'because their task holds its share of the worker''s slots: skipped, reason fair_share. '
    'Returns their ids.';

COMMENT ON FUNCTION sisy_interrupt_runs_v1(bigint[], text) IS
    'internal: called by a worker that stops (interrupt_runs). Records runs p_run_ids whose '
    'callable had not returned: failed, reason interrupted. Returns their ids.';

COMMENT ON FUNCTION sisy_time_out_runs_v1(text, text) IS
    'internal: called by the planner and the runners (time_out_runs). Runs past their task''s '
    'timeout become timed_out, and the runs buffered behind them are released. Returns how '
    'many.';

COMMENT ON FUNCTION sisy_task_enqueued_v1(bigint, text, text, bigint) IS
    'internal: called by the runner of a schedule of a Django task. Records that run p_run_id '
    'enqueued its task as result p_task_result_id on backend p_backend. False when the run is '
    'no longer running (the enqueue is then rolled back).';

COMMENT ON FUNCTION sisy_task_result_started_v1(text, text, timestamptz) IS
    'internal: called on Django''s task_started signal. Notes in its run that the task of '
    'result p_task_result_id started at p_started_at. Returns the run''s id, or NULL.';

COMMENT ON FUNCTION sisy_task_result_finished_v1(text, text, text, text, text, text, text) IS
    'internal: called on Django''s task_finished signal. Ends the run that enqueued result '
    'p_task_result_id with p_status (succeeded or failed). Returns the run''s id, or NULL.';

COMMENT ON FUNCTION sisy_housekeeping_due_v1(interval) IS
    'internal: called by the planner (housekeeping_due). True for the one planner of the '
    'cluster that does the housekeeping of this period of p_every.';

COMMENT ON FUNCTION sisy_fail_orphaned_runs_v1(interval, text, text) IS
    'internal: called by the housekeeping (fail_orphaned_runs). Closes the runs that can no '
    'longer happen: their worker died or their job ended, vanished or lost its worker. Returns '
    'how many.';

COMMENT ON FUNCTION sisy_prune_runs_v1(interval, integer) IS
    'internal: called by the housekeeping (prune_runs, SISY_RUN_RETENTION_DAYS). Deletes up to '
    'p_limit runs finished more than p_retention ago, and their jobs. Returns how many.';

COMMENT ON FUNCTION sisy_load_v1(interval) IS
    'internal: called by the planner''s overload warning and by sisy_health_v1. What the '
    'cluster got through in the last p_window (instants due, executed, not run) and how far '
    'behind it is (overdue tasks, the largest lag).';

COMMENT ON FUNCTION sisy_task_state_v1(
    text, timestamptz, boolean, timestamptz, boolean, text
) IS
    'internal: called by the view sisy_task_status, the Python API, the admin and manage.py '
    'sisy. A task''s state from its row''s values: broken, finished, paused, running, failing, '
    'unplanned or scheduled.';

COMMENT ON FUNCTION sisy_refusal_v1(text, boolean, timestamptz, text) IS
    'internal: called by sisy_act_v1 and the Python API. Why action p_action (run_now, pause, '
    'resume, clear_error) may not be done to a task whose row holds these values, or NULL.';

COMMENT ON FUNCTION sisy_act_v1(text, bigint[]) IS
    'internal: the decision point the Python API, the admin and manage.py sisy call (the '
    'tables'' owner may call it at psql, for several tasks at once). Does action p_action '
    '(run_now, pause, resume, clear_error) to tasks p_task_ids, each unless refused. One row '
    'per task: task_id, label, done, refusal.';

COMMENT ON FUNCTION sisy_task_id_v1(text) IS
    'internal: called by the operators'' functions and manage.py sisy. The id of the task '
    'p_task names: its label or, when no task has that label, its id. Raises no_data_found when '
    'there is none.';

COMMENT ON FUNCTION sisy_run_now_v1(text) IS
    'Runs a task once, now, then as scheduled (version 1 of sisy_run_now). p_task: its label, '
    'or its id. Returns one row: task_id, label, done, refusal. Operators call sisy_run_now, '
    'which calls the current version.';

COMMENT ON FUNCTION sisy_pause_v1(text) IS
    'Pauses a task, without a note or an end (version 1 of sisy_pause). p_task: its label, or '
    'its id. Returns one row: task_id, label, done, refusal. Operators call sisy_pause, which '
    'calls the current version.';

COMMENT ON FUNCTION sisy_resume_v1(text) IS
    'Resumes a paused task (version 1 of sisy_resume). p_task: its label, or its id. Returns '
    'one row: task_id, label, done, refusal. Operators call sisy_resume, which calls the '
    'current version.';

COMMENT ON FUNCTION sisy_clear_error_v1(text) IS
    'Clears the error of a broken task (version 1 of sisy_clear_error). p_task: its label, or '
    'its id. Returns one row: task_id, label, done, refusal. Operators call sisy_clear_error, '
    'which calls the current version.';

COMMENT ON VIEW sisy_task_status IS
    'One row per task: its state (broken, finished, paused, running, failing, unplanned, '
    'scheduled), why it is broken (error), its next and last runs, its latest outcome '
    '(last_status, last_error...) and its pause (pause_note, paused_until, paused_at, '
    'paused_by). No userdata nor callable: the operator and monitor roles read it. docs/sql.md';

COMMENT ON VIEW sisy_run_history IS
    'One row per run, or per decision not to run: its task''s label, its instant '
    '(scheduled_for), status and reason (docs/reliability.md), lag, duration, attempt, worker, '
    'error, jitter, and whether a backfill asked for it. The operator and monitor roles read '
    'it. docs/sql.md';

COMMENT ON FUNCTION sisy_task_result_enqueued_v1(bigint, jsonb, text, integer) IS
    'internal: called by sisy_pg.django_tasks.ProcrastinateBackend. Records the result of job '
    'p_job_id, just deferred (READY). Returns when it was enqueued.';

COMMENT ON FUNCTION sisy_task_result_start_v1(bigint, text, jsonb, text, integer) IS
    'internal: called by the worker running a job of the Django tasks backend. An attempt of '
    'job p_job_id starts (RUNNING). Returns the result, or no row when it already succeeded.';

COMMENT ON FUNCTION sisy_task_result_finish_v1(bigint, text, jsonb, jsonb) IS
    'internal: called by the worker running a job of the Django tasks backend. An attempt of '
    'job p_job_id ended: p_status SUCCESSFUL, FAILED, or READY for a retry. Returns when it '
    'finished.';

COMMENT ON FUNCTION sisy_task_result_v1(bigint, interval) IS
    'internal: called by the Django tasks backend (get_result). The result of job p_job_id, '
    'FAILED if its job can no longer run; no row when there is none.';

COMMENT ON FUNCTION sisy_metric_buckets_v1(text) IS
    'internal: called by the metrics'' trigger and sisy_metrics_v1. The upper bounds, in '
    'seconds, of the buckets of histogram p_metric (lag, duration), +Infinity last.';

COMMENT ON FUNCTION sisy_metrics_fold_v1() IS
    'internal: called by sisy_metrics_v1 and the trigger sisy_taskrun_metrics_v1. Folds the '
    'rows of sisy_metric_delta into sisy_metric_total. Returns how many.';

COMMENT ON FUNCTION sisy_taskrun_metrics_v1() IS
    'internal: the triggers sisy_taskrun_metrics_insert_v1 and sisy_taskrun_metrics_update_v1. '
    'Counts each run that reaches a final status (its status, reason, lag and duration) in '
    'sisy_metric_delta.';

COMMENT ON FUNCTION sisy_metrics_v1(interval) IS
    'The metrics of /sisy/metrics as rows (version 1 of sisy_metrics): metric, labels, le, '
    'value. p_stalled_after: a worker silent longer is not counted. Operators call '
    'sisy_metrics, which calls the current version.';

COMMENT ON FUNCTION sisy_task_forget_pause_v1() IS
    'internal: the triggers sisy_task_resumed_forgets_pause_v1, '
    'sisy_task_deleted_forgets_pause_v1 and sisy_task_truncated_forgets_pauses_v1. A task '
    'resumed, deleted or truncated forgets its pause''s note and end.';

COMMENT ON FUNCTION sisy_pause_tasks_v1(bigint[], text, timestamptz) IS
    'internal: called by the Python API, the admin, manage.py sisy and sisy_pause_v2. Pauses '
    'tasks p_task_ids with note p_note and end p_until (NULL: none). One row per task: task_id, '
    'label, done, refusal.';

COMMENT ON FUNCTION sisy_pause_v2(text, text, timestamptz) IS
    'Pauses a task, with a note and an end (version 2 of sisy_pause). p_task: its label, or its '
    'id; p_note: why; p_until: when the planners resume it. Returns one row: task_id, label, '
    'done, refusal. Operators call sisy_pause, which calls the current version.';

COMMENT ON FUNCTION sisy_pause_of_v1(bigint, boolean) IS
    'internal: called by the Python API and the admin. Task p_task_id''s pause as a JSON object '
    '(note, until, paused_at, paused_by), or NULL: not paused (p_enabled), or paused with '
    'neither a note nor an end.';

COMMENT ON FUNCTION sisy_end_pauses_v1(integer) IS
    'internal: called by the planner (end_pauses). Resumes up to p_limit tasks whose pause '
    'ended. One row per pause ended: task_id, label, until, resumed, refusal.';

COMMENT ON FUNCTION sisy_task_diff_v1(jsonb, jsonb, boolean) IS
    'internal: called by the audit''s triggers. The columns of a task''s definition that differ '
    'between two versions of its row, as {column: {old, new}}, or NULL; next_run only with '
    'p_with_next_run.';

COMMENT ON FUNCTION sisy_task_audit_v1() IS
    'internal: the triggers sisy_task_audit_insert_v1, sisy_task_audit_update_v1, '
    'sisy_task_audit_delete_v1 and sisy_task_audit_truncate_v1. Records each change of a task '
    'in sisy_task_change, with who made it and through what.';

COMMENT ON FUNCTION sisy_task_pause_audit_v1() IS
    'internal: the trigger sisy_task_pause_audit_v1. Records a pause''s note and end, set or '
    'changed, as a change of its task.';

COMMENT ON FUNCTION sisy_task_change_append_only_v1() IS
    'internal: the trigger sisy_task_change_append_only_v1. Refuses an UPDATE, a DELETE or a '
    'TRUNCATE of sisy_task_change, but for the retention''s deletes.';

COMMENT ON FUNCTION sisy_prune_task_changes_v1(interval, integer) IS
    'internal: called by the housekeeping (prune_task_changes). Deletes up to p_limit changes '
    'of tasks made more than p_retention ago. Returns how many.';

COMMENT ON VIEW sisy_task_changes IS
    'Every change of every task, by any writer: when (changed_at), who (actor), through what '
    '(via: admin, cli, api, sql, migration, worker) and what changed (changes: each column''s '
    'old and new value). It shows userdata and callables: the roles of sql/roles.sql are not '
    'granted it. docs/audit.md';

COMMENT ON FUNCTION sisy_request_backfill_v1(bigint, timestamptz, timestamptz, integer) IS
    'internal: called by manage.py sisy backfill, the admin and sisy_backfill_v1. Asks for a '
    'backfill of task p_task_id''s instants from p_from through p_to, p_limit at most. One row: '
    'backfill_id, task_id, label, refusal; none for a task not found.';

COMMENT ON FUNCTION sisy_backfill_v1(text, timestamptz, timestamptz, integer) IS
    'Runs the past instants of a task''s schedule from p_from through p_to (version 1 of '
    'sisy_backfill). p_task: its label, or its id; p_limit: the most instants (NULL: '
    'SISY_BACKFILL_LIMIT). Returns one row: backfill_id, task_id, label, refusal. Operators '
    'call sisy_backfill, which calls the current version.';

COMMENT ON FUNCTION sisy_store_backfill_v1(bigint, timestamptz[], text, text, text) IS
    'internal: called by what computed a backfill''s instants (manage.py sisy backfill, the '
    'admin, a planner). Queues a run for each instant p_instants of backfill p_backfill_id that '
    'has none, or records why none is run (p_error). Returns instants, queued, already, error.';

COMMENT ON FUNCTION sisy_release_backfill_v1(bigint) IS
    'internal: called by sisy_store_backfill_v1 and when a backfill run ends. Defers the job of '
    'the next backfill run of task p_task_id, one at a time. Returns 1 when one was deferred.';

COMMENT ON FUNCTION sisy_taskrun_backfill_next_v1() IS
    'internal: the trigger sisy_taskrun_backfill_next_v1. A backfill run ended: the next one of '
    'its task gets its job.';

COMMENT ON FUNCTION sisy_task_forget_backfills_v1() IS
    'internal: the triggers sisy_task_deleted_forgets_backfills_v1 and '
    'sisy_task_truncated_forgets_backfills_v1. A task deleted takes its backfills with it.';

COMMENT ON FUNCTION sisy_prune_backfills_v1(interval) IS
    'internal: called by sisy_prune_runs_v1. Deletes the backfills asked more than p_retention '
    'ago none of whose runs waits or runs. Returns how many.';

COMMENT ON FUNCTION sisy_release_jittered_runs_v1(interval, text, text, integer) IS
    'internal: called by the planner (release_jittered_runs). Defers the jobs of the runs held '
    'for their jitter that are due within p_lead. Returns how many.';

COMMENT ON FUNCTION sisy_worker_seen_v1(
    bigint, text, text[], boolean, integer, integer, integer, text, jsonb
) IS
    'internal: called by each worker every few seconds (worker_seen). Writes its row of '
    'sisy_worker: its queues, whether it plans, its slots, whether notifications reach it.';

COMMENT ON FUNCTION sisy_worker_gone_v1(bigint) IS
    'internal: called by a worker that stops (worker_gone). Deletes its row of sisy_worker.';

COMMENT ON FUNCTION sisy_overloaded_v1(integer, integer, integer, float8) IS
    'internal: called by sisy_health_v1; the rule of the planner''s overload warning. Whether '
    'the load sisy_load_v1 measured is overload.';

COMMENT ON FUNCTION sisy_health_v1(interval, interval, interval) IS
    'What is wrong with sisy now (version 1 of sisy_health): one row per check, check_name, '
    'with ok, subjects and facts. p_stalled_after: a worker silent longer is dead; '
    'p_max_overdue: how late a next run may be; p_recent: the history judged. Operators call '
    'sisy_health, which calls the current version.';
