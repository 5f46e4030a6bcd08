-- Undoes schema.sql (the reverse of migration sisy.0001_initial); Django then
-- drops the tables.
DROP VIEW IF EXISTS sisy_run_history;
DROP VIEW IF EXISTS sisy_task_status;
DROP TRIGGER IF EXISTS sisy_taskrun_notify ON sisy_taskrun;
DROP TRIGGER IF EXISTS sisy_taskrun_truncate_cancels_jobs ON sisy_taskrun;
DROP TRIGGER IF EXISTS sisy_taskrun_delete_cancels_job ON sisy_taskrun;
DROP TRIGGER IF EXISTS sisy_taskrun_cancel_job ON sisy_taskrun;
DROP TRIGGER IF EXISTS sisy_task_notify ON sisy_task;
DROP TRIGGER IF EXISTS sisy_task_before_delete ON sisy_task;
DROP TRIGGER IF EXISTS sisy_task_after_disable ON sisy_task;
DROP TRIGGER IF EXISTS sisy_task_before_write ON sisy_task;
DROP FUNCTION IF EXISTS sisy_prune_runs(timestamptz, integer);
DROP FUNCTION IF EXISTS sisy_fail_orphaned_runs();
DROP FUNCTION IF EXISTS sisy_start_run(bigint, bigint, text);
DROP FUNCTION IF EXISTS sisy_claim_due(integer, interval, timestamptz, text, text);
DROP FUNCTION IF EXISTS sisy_taskrun_notify();
DROP FUNCTION IF EXISTS sisy_taskrun_cancel_all_jobs();
DROP FUNCTION IF EXISTS sisy_taskrun_cancel_job();
DROP FUNCTION IF EXISTS sisy_task_notify();
DROP FUNCTION IF EXISTS sisy_task_before_delete();
DROP FUNCTION IF EXISTS sisy_task_after_disable();
DROP FUNCTION IF EXISTS sisy_task_before_write();
DROP INDEX IF EXISTS sisy_taskrun_active_idx;
DROP INDEX IF EXISTS sisy_taskrun_finished_idx;
DROP INDEX IF EXISTS sisy_task_to_plan_idx;
DROP INDEX IF EXISTS sisy_task_due_idx;
ALTER TABLE sisy_taskrun DROP CONSTRAINT IF EXISTS sisy_taskrun_status_known;
ALTER TABLE sisy_task
    DROP CONSTRAINT IF EXISTS sisy_task_running_window,
    DROP CONSTRAINT IF EXISTS sisy_task_callable_has_path,
    DROP CONSTRAINT IF EXISTS sisy_task_userdata_is_object,
    DROP CONSTRAINT IF EXISTS sisy_task_schedule_fields;
