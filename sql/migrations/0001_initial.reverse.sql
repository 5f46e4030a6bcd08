-- Undoes 0001_initial.sql (unapplying the Django migration sisy.0001_initial).
-- Frozen with it. Dropping the tables drops their triggers, constraints and
-- indexes; what remains are the views and functions.
-- Queued runs leave no job behind to be fetched.
SELECT sisy_cancel_run_job_v1(job_id) FROM sisy_taskrun WHERE status = 'queued' AND job_id IS NOT NULL;
DROP VIEW sisy_run_history;
DROP VIEW sisy_task_status;
DROP VIEW sisy_task_changes;
DROP TABLE sisy_taskrun;
DROP TABLE sisy_task;
DROP TABLE sisy_backfill;
DROP FUNCTION sisy_task_forget_backfills_v1();
DROP TABLE sisy_task_change;
DROP FUNCTION sisy_prune_task_changes_v1(interval, integer);
DROP FUNCTION sisy_task_change_append_only_v1();
DROP TRIGGER sisy_task_pause_audit_v1 ON sisy_task_pause;
DROP FUNCTION sisy_task_pause_audit_v1();
DROP FUNCTION sisy_task_audit_v1();
DROP FUNCTION sisy_task_diff_v1(jsonb, jsonb, boolean);
DROP TABLE sisy_housekeeping;
DROP TABLE sisy_task_pause;
DROP TABLE sisy_worker;
DROP TABLE sisy_task_result;
DROP TABLE sisy_metric_delta;
DROP TABLE sisy_metric_total;
DROP FUNCTION sisy_metrics_v1(interval);
DROP FUNCTION sisy_taskrun_metrics_v1();
DROP FUNCTION sisy_metrics_fold_v1();
DROP FUNCTION sisy_metric_buckets_v1(text);
DROP FUNCTION sisy_task_result_v1(bigint, interval);
DROP FUNCTION sisy_task_result_finish_v1(bigint, text, jsonb, jsonb);
DROP FUNCTION sisy_task_result_start_v1(bigint, text, jsonb, text, integer);
DROP FUNCTION sisy_task_result_enqueued_v1(bigint, jsonb, text, integer);
DROP FUNCTION sisy_health_v1(interval, interval, interval);
DROP FUNCTION sisy_overloaded_v1(integer, integer, integer, float8);
DROP FUNCTION sisy_worker_gone_v1(bigint);
DROP FUNCTION sisy_worker_seen_v1(
    bigint, text, text[], boolean, integer, integer, integer, text, jsonb
);
DROP FUNCTION sisy_end_pauses_v1(integer);
DROP FUNCTION sisy_pause_of_v1(bigint, boolean);
DROP FUNCTION sisy_pause_v2(text, text, timestamptz);
DROP FUNCTION sisy_pause_tasks_v1(bigint[], text, timestamptz);
DROP FUNCTION sisy_task_forget_pause_v1();
DROP FUNCTION sisy_release_jittered_runs_v1(interval, text, text, integer);
DROP FUNCTION sisy_prune_backfills_v1(interval);
DROP FUNCTION sisy_taskrun_backfill_next_v1();
DROP FUNCTION sisy_release_backfill_v1(bigint);
DROP FUNCTION sisy_store_backfill_v1(bigint, timestamptz[], text, text, text);
DROP FUNCTION sisy_backfill_v1(text, timestamptz, timestamptz, integer);
DROP FUNCTION sisy_request_backfill_v1(bigint, timestamptz, timestamptz, integer);
DROP FUNCTION sisy_clear_error_v1(text);
DROP FUNCTION sisy_run_now_v1(text);
DROP FUNCTION sisy_resume_v1(text);
DROP FUNCTION sisy_pause_v1(text);
DROP FUNCTION sisy_task_id_v1(text);
DROP FUNCTION sisy_act_v1(text, bigint[]);
DROP FUNCTION sisy_refusal_v1(text, boolean, timestamptz, text);
DROP FUNCTION sisy_task_state_v1(text, timestamptz, boolean, timestamptz, boolean, text);
DROP FUNCTION sisy_load_v1(interval);
DROP FUNCTION sisy_policy_v1(jsonb, boolean, interval);
DROP FUNCTION sisy_prune_runs_v1(interval, integer);
DROP FUNCTION sisy_fail_orphaned_runs_v1(interval, text, text);
DROP FUNCTION sisy_task_enqueued_v1(bigint, text, text, bigint);
DROP FUNCTION sisy_run_alive_v1(bigint, jsonb, interval);
DROP FUNCTION sisy_task_result_started_v1(text, text, timestamptz);
DROP FUNCTION sisy_task_result_finished_v1(text, text, text, text, text, text, text);
DROP FUNCTION sisy_housekeeping_due_v1(interval);
DROP FUNCTION sisy_time_out_runs_v1(text, text);
DROP FUNCTION sisy_interrupt_runs_v1(bigint[], text);
DROP FUNCTION sisy_skip_runs_over_share_v1(bigint[], bigint, text, text);
DROP FUNCTION sisy_break_task_v1(bigint, text, text);
DROP FUNCTION sisy_retry_run_v1(bigint, text, text, interval, text, text);
DROP FUNCTION sisy_finish_run_v1(bigint, text, text, text, text, text);
DROP FUNCTION sisy_release_buffered_run_v1(bigint, text, text);
DROP FUNCTION sisy_start_run_v1(bigint, bigint, text, interval, interval);
DROP FUNCTION sisy_store_decisions_v1(
    text, text, bigint[], timestamptz[], text[], text[], jsonb[],
    bigint[], timestamptz[], boolean[], text[], integer
);
DROP FUNCTION sisy_claim_due_v1(integer, interval, interval);
DROP FUNCTION sisy_taskrun_notify_v1();
DROP FUNCTION sisy_taskrun_cancel_all_jobs_v1();
DROP FUNCTION sisy_taskrun_cancel_job_v1();
DROP FUNCTION sisy_task_notify_v1();
DROP FUNCTION sisy_task_before_delete_v1();
DROP FUNCTION sisy_task_after_disable_v1();
DROP FUNCTION sisy_task_before_write_v1();
DROP FUNCTION sisy_worker_heartbeats_v1();
DROP FUNCTION sisy_live_workers_v1(interval);
DROP FUNCTION sisy_delete_finished_jobs_v1(bigint[]);
DROP FUNCTION sisy_job_pending_v1(bigint, interval);
DROP FUNCTION sisy_job_alive_v1(bigint, interval);
DROP FUNCTION sisy_cancel_run_job_v1(bigint);
DROP FUNCTION sisy_defer_run_jobs_v1(text, text, bigint[], timestamptz[], integer, timestamptz);
DROP FUNCTION sisy_json_limits_error_v1(jsonb);
