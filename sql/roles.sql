-- sisy-pg's roles: least privilege for workers, operators and monitors.
--
-- A psql script (docs/security.md#roles). Run it in the project's database
-- after `manage.py migrate`, and again after each upgrade of sisy-pg (it is
-- idempotent), as a superuser or as the owner of sisy's tables if that role
-- may create roles:
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f roles.sql
--   python -m django sisy_roles | psql "$DATABASE_URL" -v ON_ERROR_STOP=1 \
--       -v worker=shop_worker -v operator=shop_operator -v monitor=shop_monitor
--
-- It creates three NOLOGIN roles if they are missing (psql variables worker,
-- operator and monitor; by default sisy_worker, sisy_operator, sisy_monitor)
-- and grants them rights on the objects of the current schema, where migrate
-- created sisy's and procrastinate's. Roles belong to the whole cluster:
-- name them after the project when several projects share one. Log in as a
-- member: CREATE ROLE shop_worker_1 LOGIN PASSWORD '...' IN ROLE shop_worker;
--
--   * the owner (the role that runs migrate, not made here) owns every table
--     and function and keeps every right;
--   * worker: what `manage.py procrastinate worker` needs to plan and run
--     sisy's tasks, and no more: procrastinate's tables and functions, the
--     task rows (read; write only the planning columns), the run history,
--     and sisy's planner and runner functions. Grant it, too, what your
--     callables use (your apps' tables);
--   * operator: run now, pause, resume, clear error and backfill, through
--     SECURITY DEFINER functions (sisy_run_now, sisy_pause, sisy_resume,
--     sisy_clear_error, sisy_backfill, and the versions they call); it reads the
--     views as monitor does, and cannot read userdata or callable_info, change a
--     task, or touch the history;
--   * monitor: the views sisy_task_status and sisy_run_history, and the
--     health probe (sisy_health) and the metrics (sisy_metrics), both
--     SECURITY DEFINER, nothing else.

\if :{?worker}
\else
    \set worker sisy_worker
\endif
\if :{?operator}
\else
    \set operator sisy_operator
\endif
\if :{?monitor}
\else
    \set monitor sisy_monitor
\endif

SELECT n.nspname AS schema, n.oid AS schema_oid
  FROM pg_namespace AS n WHERE n.nspname = current_schema() \gset

SELECT format('CREATE ROLE %I NOLOGIN', name)
  FROM unnest(ARRAY[:'worker', :'operator', :'monitor']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name)
\gexec

GRANT USAGE ON SCHEMA :"schema" TO :"worker", :"operator", :"monitor";
-- The SECURITY DEFINER functions find sisy's objects in this schema: nobody
-- but its owner may create objects there (PostgreSQL 15's default for public).
REVOKE CREATE ON SCHEMA :"schema" FROM PUBLIC;

-- worker ----------------------------------------------------------------------------

-- procrastinate's tables, sequences and functions.
SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO %I', c.oid::regclass, :'worker')
  FROM pg_class AS c
 WHERE c.relnamespace = :schema_oid AND c.relkind IN ('r', 'p')
   AND c.relname LIKE 'procrastinate\_%'
 ORDER BY c.relname
\gexec
SELECT format('GRANT USAGE ON SEQUENCE %s TO %I', c.oid::regclass, :'worker')
  FROM pg_class AS c
 WHERE c.relnamespace = :schema_oid AND c.relkind = 'S'
   AND c.relname LIKE 'procrastinate\_%'
 ORDER BY c.relname
\gexec
SELECT format('GRANT EXECUTE ON FUNCTION %s TO %I', p.oid::regprocedure, :'worker')
  FROM pg_proc AS p
 WHERE p.pronamespace = :schema_oid AND p.proname LIKE 'procrastinate\_%'
 ORDER BY p.oid
\gexec

-- The tasks: read, and write only what the planner and the runner decide.
GRANT SELECT, UPDATE (next_run, last_run, fire_count, enabled, finished_at, error)
    ON sisy_task TO :"worker";
-- The history: recorded, and pruned (SISY_RUN_RETENTION_DAYS).
GRANT SELECT, INSERT, UPDATE, DELETE ON sisy_taskrun TO :"worker";
GRANT SELECT, UPDATE ON sisy_housekeeping TO :"worker";
-- The changes of tasks (sisy_task_change) are pruned with it, through a
-- SECURITY DEFINER function: the table is written by the audit's trigger alone.
GRANT EXECUTE ON FUNCTION sisy_prune_task_changes_v1(interval, integer) TO :"worker";
-- Pauses: the planner wakes for the earliest end, and resumes through
-- sisy_end_pauses_v1 (SECURITY DEFINER).
GRANT SELECT ON sisy_task_pause TO :"worker";
-- Backfills: a planner computes the instants of those asked in SQL, the end
-- of a backfill run defers the next one's job, retention deletes old ones.
GRANT SELECT, UPDATE, DELETE ON sisy_backfill TO :"worker";
-- Its own report (sisy_worker_seen_v1, sisy_worker_gone_v1).
GRANT SELECT, INSERT, UPDATE, DELETE ON sisy_worker TO :"worker";
-- Django tasks on procrastinate (sisy_pg.django_tasks.ProcrastinateBackend):
-- their results, enqueued, run and read by the worker (a callable, or a
-- task, may enqueue one); deleted with their jobs.
GRANT SELECT, INSERT, UPDATE ON sisy_task_result TO :"worker";
GRANT EXECUTE ON FUNCTION
    sisy_task_result_enqueued_v1(bigint, jsonb, text, integer),
    sisy_task_result_start_v1(bigint, text, jsonb, text, integer),
    sisy_task_result_finish_v1(bigint, text, jsonb, jsonb),
    sisy_task_result_v1(bigint, interval)
    TO :"worker";
-- The planner's and the runners' functions (sql/queries.sql), those they
-- call, the one the CHECK constraints of sisy_task call on every write, and
-- those of the health probe (manage.py sisy health).
GRANT EXECUTE ON FUNCTION
    sisy_json_limits_error_v1(jsonb),
    sisy_claim_due_v1(integer, interval, interval),
    sisy_store_decisions_v1(
        text, text, bigint[], timestamptz[], text[], text[], jsonb[],
        bigint[], timestamptz[], boolean[], text[], integer
    ),
    sisy_defer_run_jobs_v1(text, text, bigint[], timestamptz[], integer, timestamptz),
    sisy_cancel_run_job_v1(bigint),
    sisy_job_alive_v1(bigint, interval),
    sisy_job_pending_v1(bigint, interval),
    sisy_run_alive_v1(bigint, jsonb, interval),
    sisy_policy_v1(jsonb, boolean, interval),
    sisy_start_run_v1(bigint, bigint, text, interval, interval),
    sisy_finish_run_v1(bigint, text, text, text, text, text),
    sisy_retry_run_v1(bigint, text, text, interval, text, text),
    sisy_break_task_v1(bigint, text, text),
    sisy_release_buffered_run_v1(bigint, text, text),
    sisy_time_out_runs_v1(text, text),
    sisy_skip_runs_over_share_v1(bigint[], bigint, text, text),
    sisy_interrupt_runs_v1(bigint[], text),
    sisy_worker_seen_v1(bigint, text, text[], boolean, integer, integer, integer, text, jsonb),
    sisy_worker_gone_v1(bigint),
    sisy_load_v1(interval),
    sisy_housekeeping_due_v1(interval),
    sisy_fail_orphaned_runs_v1(interval, text, text),
    sisy_task_enqueued_v1(bigint, text, text, bigint),
    sisy_task_result_started_v1(text, text, timestamptz),
    sisy_task_result_finished_v1(text, text, text, text, text, text, text),
    sisy_prune_runs_v1(interval, integer),
    sisy_delete_finished_jobs_v1(bigint[]),
    sisy_live_workers_v1(interval),
    sisy_task_state_v1(text, timestamptz, boolean, timestamptz, boolean, text),
    sisy_health_v1(interval, interval, interval),
    sisy_end_pauses_v1(integer),
    sisy_refusal_v1(text, boolean, timestamptz, text),
    sisy_store_backfill_v1(bigint, timestamptz[], text, text, text),
    sisy_release_backfill_v1(bigint),
    sisy_prune_backfills_v1(interval),
    sisy_release_jittered_runs_v1(interval, text, text, integer)
    TO :"worker";

-- monitor ---------------------------------------------------------------------------

-- The views run with their owner's rights; a function they call is called
-- with the reader's.
GRANT SELECT ON sisy_task_status, sisy_run_history TO :"monitor";
GRANT EXECUTE ON FUNCTION
    sisy_task_state_v1(text, timestamptz, boolean, timestamptz, boolean, text)
    TO :"monitor";
-- SECURITY DEFINER: health's verdicts, labels and worker names, without any
-- right on the tables (manage.py sisy health works as the monitor, too).
GRANT EXECUTE ON FUNCTION
    sisy_health(interval, interval, interval),
    sisy_health_v1(interval, interval, interval)
    TO :"monitor";
-- SECURITY DEFINER: the metrics a scrape reads (manage.py sisy metrics, /sisy/metrics).
GRANT EXECUTE ON FUNCTION sisy_metrics(interval), sisy_metrics_v1(interval) TO :"monitor";

-- operator --------------------------------------------------------------------------

-- SECURITY DEFINER: each does its one change with the owner's rights. The
-- operators' names (docs/sql.md), then the versions, for scripts that name one.
GRANT EXECUTE ON FUNCTION
    sisy_run_now(text),
    sisy_pause(text, text, timestamptz),
    sisy_resume(text),
    sisy_clear_error(text),
    sisy_backfill(text, timestamptz, timestamptz, integer),
    sisy_run_now_v1(text),
    sisy_pause_v1(text),
    sisy_pause_v2(text, text, timestamptz),
    sisy_resume_v1(text),
    sisy_clear_error_v1(text),
    sisy_backfill_v1(text, timestamptz, timestamptz, integer)
    TO :"operator";
GRANT :"monitor" TO :"operator";
