-- sisy-pg: what PostgreSQL itself does for the schedule.
--
-- Applied by the migration sisy.0001_initial after Django has created the
-- tables sisy_task and sisy_taskrun; every statement can be re-applied.
-- It relies on procrastinate's schema (procrastinate_defer_jobs_v1,
-- procrastinate_cancel_job_v1, procrastinate_jobs), which the migration
-- depends on.
--
-- The contract, whoever the writer (ORM save, queryset.update, bulk_create,
-- admin, a migration with historical models, psql):
--   * a change to what decides a task's instants clears its next_run, and
--     every committed change notifies the channel sisy_task_changed, so the
--     workers' planners re-plan it at once;
--   * disabling or deleting a task cancels its queued runs and their
--     procrastinate jobs in the same transaction;
--   * sisy_taskrun holds one row per (task, instant): the unique constraint
--     is what makes each fire happen exactly once.

-- Defaults for writers that bypass Django -----------------------------------

ALTER TABLE sisy_task
    ALTER COLUMN schedule SET DEFAULT '* * * * *',
    ALTER COLUMN enabled SET DEFAULT true,
    ALTER COLUMN iterations SET DEFAULT 0,
    ALTER COLUMN wait_for_schedule SET DEFAULT true,
    ALTER COLUMN allow_overlap SET DEFAULT true,
    ALTER COLUMN userdata SET DEFAULT '{}'::jsonb,
    ALTER COLUMN fire_count SET DEFAULT 0,
    ALTER COLUMN schedule_error SET DEFAULT '',
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN modified_at SET DEFAULT now();

ALTER TABLE sisy_taskrun
    ALTER COLUMN status SET DEFAULT 'queued',
    ALTER COLUMN queued_at SET DEFAULT now(),
    ALTER COLUMN error SET DEFAULT '',
    ALTER COLUMN traceback SET DEFAULT '',
    ALTER COLUMN worker SET DEFAULT '';

-- Constraints: the last line of defence for raw SQL ---------------------------

ALTER TABLE sisy_task
    DROP CONSTRAINT IF EXISTS sisy_task_schedule_fields,
    ADD CONSTRAINT sisy_task_schedule_fields CHECK (
        cardinality(regexp_split_to_array(btrim(schedule), '\s+')) BETWEEN 5 AND 6
    ),
    DROP CONSTRAINT IF EXISTS sisy_task_userdata_is_object,
    ADD CONSTRAINT sisy_task_userdata_is_object CHECK (jsonb_typeof(userdata) = 'object'),
    DROP CONSTRAINT IF EXISTS sisy_task_callable_has_path,
    ADD CONSTRAINT sisy_task_callable_has_path CHECK (
        jsonb_typeof(callable_info) = 'object'
        AND coalesce(jsonb_typeof(callable_info -> 'func_path') = 'string', false)
    ),
    DROP CONSTRAINT IF EXISTS sisy_task_running_window,
    ADD CONSTRAINT sisy_task_running_window CHECK (
        start_running IS NULL OR end_running IS NULL OR end_running >= start_running
    );

ALTER TABLE sisy_taskrun
    DROP CONSTRAINT IF EXISTS sisy_taskrun_status_known,
    ADD CONSTRAINT sisy_taskrun_status_known CHECK (
        status IN ('queued', 'running', 'succeeded', 'failed', 'skipped', 'cancelled')
    );

-- Indexes: planning cost follows what is due, not what is defined ------------

-- The next instant to wake for, and the tasks due now (sisy_claim_due).
CREATE INDEX IF NOT EXISTS sisy_task_due_idx
    ON sisy_task (next_run) WHERE enabled AND next_run IS NOT NULL;
-- Tasks waiting for the planner (new, or changed by a writer).
CREATE INDEX IF NOT EXISTS sisy_task_to_plan_idx
    ON sisy_task (id)
    WHERE enabled AND next_run IS NULL AND finished_at IS NULL AND schedule_error = '';
-- Finished runs by age (retention, sisy_prune_runs).
CREATE INDEX IF NOT EXISTS sisy_taskrun_finished_idx
    ON sisy_taskrun (finished_at)
    WHERE status IN ('succeeded', 'failed', 'skipped', 'cancelled');
-- Queued and running runs of a task (cancellation, overlap check).
CREATE INDEX IF NOT EXISTS sisy_taskrun_active_idx
    ON sisy_taskrun (task_id, status) WHERE status IN ('queued', 'running');

-- Triggers on sisy_task ----------------------------------------------------------

CREATE OR REPLACE FUNCTION sisy_task_before_write() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.label := COALESCE(NULLIF(NEW.label, ''), NEW.callable_info ->> 'func_path');
        -- A raw INSERT without a zone gets the session's, in which its
        -- timestamps were typed too.
        NEW.timezone := COALESCE(NULLIF(NEW.timezone, ''), current_setting('TimeZone'));
    END IF;

    IF TG_OP = 'INSERT' OR NEW.timezone IS DISTINCT FROM OLD.timezone THEN
        BEGIN
            PERFORM now() AT TIME ZONE NEW.timezone;
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'sisy_task.timezone: unknown time zone "%"', NEW.timezone
                USING ERRCODE = 'check_violation',
                      HINT = 'Use an IANA name such as Europe/Paris or UTC.';
        END;
    END IF;

    IF TG_OP = 'UPDATE' AND (
        NEW.schedule, NEW.timezone, NEW.enabled, NEW.start_running, NEW.end_running,
        NEW.iterations, NEW.wait_for_schedule
    ) IS DISTINCT FROM (
        OLD.schedule, OLD.timezone, OLD.enabled, OLD.start_running, OLD.end_running,
        OLD.iterations, OLD.wait_for_schedule
    ) THEN
        -- What decides the instants changed: re-plan, unless this writer set
        -- next_run itself (the planner, or a user asking for a run now).
        IF NEW.next_run IS NOT DISTINCT FROM OLD.next_run THEN
            NEW.next_run := NULL;
        END IF;
        NEW.schedule_error := '';
        IF NEW.enabled AND NOT OLD.enabled THEN
            -- Re-enabled: the planner decides again whether it is finished.
            NEW.finished_at := NULL;
        END IF;
    END IF;

    -- Raw SQL edits of the definition show in modified_at as ORM saves do.
    IF TG_OP = 'UPDATE'
       AND NEW.modified_at IS NOT DISTINCT FROM OLD.modified_at
       AND (NEW.label, NEW.callable_info, NEW.schedule, NEW.timezone, NEW.enabled,
            NEW.start_running, NEW.end_running, NEW.iterations, NEW.wait_for_schedule,
            NEW.allow_overlap, NEW.userdata)
           IS DISTINCT FROM
           (OLD.label, OLD.callable_info, OLD.schedule, OLD.timezone, OLD.enabled,
            OLD.start_running, OLD.end_running, OLD.iterations, OLD.wait_for_schedule,
            OLD.allow_overlap, OLD.userdata)
    THEN
        NEW.modified_at := now();
    END IF;

    IF NOT NEW.enabled THEN
        NEW.next_run := NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION sisy_task_after_disable() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- A user disabled the task (a finished task keeps its last queued run).
    UPDATE sisy_taskrun
       SET status = 'cancelled', finished_at = clock_timestamp(),
           error = 'cancelled: the task was disabled before this run started'
     WHERE task_id = NEW.id AND status = 'queued';
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION sisy_task_before_delete() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- The ORM deletes the runs itself; raw SQL relies on this.
    DELETE FROM sisy_taskrun WHERE task_id = OLD.id;
    RETURN OLD;
END;
$$;

CREATE OR REPLACE FUNCTION sisy_task_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- One notification per transaction (PostgreSQL folds identical ones),
    -- however many rows the statement touched.
    PERFORM pg_notify('sisy_task_changed', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS sisy_task_before_write ON sisy_task;
CREATE TRIGGER sisy_task_before_write
    BEFORE INSERT OR UPDATE ON sisy_task
    FOR EACH ROW EXECUTE FUNCTION sisy_task_before_write();

DROP TRIGGER IF EXISTS sisy_task_after_disable ON sisy_task;
CREATE TRIGGER sisy_task_after_disable
    AFTER UPDATE OF enabled ON sisy_task
    FOR EACH ROW WHEN (OLD.enabled AND NOT NEW.enabled AND NEW.finished_at IS NULL)
    EXECUTE FUNCTION sisy_task_after_disable();

DROP TRIGGER IF EXISTS sisy_task_before_delete ON sisy_task;
CREATE TRIGGER sisy_task_before_delete
    BEFORE DELETE ON sisy_task
    FOR EACH ROW EXECUTE FUNCTION sisy_task_before_delete();

DROP TRIGGER IF EXISTS sisy_task_notify ON sisy_task;
CREATE TRIGGER sisy_task_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sisy_task
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_notify();

-- Triggers on sisy_taskrun --------------------------------------------------------

CREATE OR REPLACE FUNCTION sisy_taskrun_cancel_job() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    run sisy_taskrun := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    -- A queued run that will not happen must not leave a job to be fetched.
    -- A job already fetched ('doing') is left alone: the runner sees that
    -- its run is no longer queued and does nothing.
    IF run.job_id IS NOT NULL THEN
        PERFORM procrastinate_cancel_job_v1(run.job_id, false, false);
    END IF;
    RETURN run;
END;
$$;

CREATE OR REPLACE FUNCTION sisy_taskrun_cancel_all_jobs() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM procrastinate_cancel_job_v1(job_id, false, false)
       FROM sisy_taskrun WHERE status = 'queued' AND job_id IS NOT NULL;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION sisy_taskrun_notify() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify(
        'sisy_run_changed',
        json_build_object('run_id', NEW.id, 'task_id', NEW.task_id, 'status', NEW.status)::text
    );
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS sisy_taskrun_cancel_job ON sisy_taskrun;
CREATE TRIGGER sisy_taskrun_cancel_job
    AFTER UPDATE OF status ON sisy_taskrun
    FOR EACH ROW WHEN (OLD.status = 'queued' AND NEW.status = 'cancelled')
    EXECUTE FUNCTION sisy_taskrun_cancel_job();

DROP TRIGGER IF EXISTS sisy_taskrun_delete_cancels_job ON sisy_taskrun;
CREATE TRIGGER sisy_taskrun_delete_cancels_job
    BEFORE DELETE ON sisy_taskrun
    FOR EACH ROW WHEN (OLD.status = 'queued')
    EXECUTE FUNCTION sisy_taskrun_cancel_job();

DROP TRIGGER IF EXISTS sisy_taskrun_truncate_cancels_jobs ON sisy_taskrun;
CREATE TRIGGER sisy_taskrun_truncate_cancels_jobs
    BEFORE TRUNCATE ON sisy_taskrun
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_taskrun_cancel_all_jobs();

DROP TRIGGER IF EXISTS sisy_taskrun_notify ON sisy_taskrun;
CREATE TRIGGER sisy_taskrun_notify
    AFTER INSERT OR UPDATE OF status ON sisy_taskrun
    FOR EACH ROW EXECUTE FUNCTION sisy_taskrun_notify();

-- Firing: claim what is due, exactly once ------------------------------------------

-- Claims up to p_limit tasks due within p_lead (skipping rows another
-- planner holds), and for each inserts its run and defers the procrastinate
-- job that executes it. The job carries the instant ("at", epoch seconds):
-- claimed a little ahead, it is already in a worker when the instant comes,
-- and the runner starts it on the dot.
-- Instants older than p_stale_before (a worker outage) are not run. Returns
-- the planning columns of every claimed task, for the caller to compute and
-- store next_run in the same transaction (sisy_set_plans).
CREATE OR REPLACE FUNCTION sisy_claim_due(
    p_limit integer,
    p_lead interval,
    p_stale_before timestamptz,
    p_queue text,
    p_task_name text
)
    RETURNS TABLE (
        id bigint, schedule varchar, timezone varchar,
        start_running timestamptz, end_running timestamptz,
        iterations integer, fire_count integer, wait_for_schedule boolean,
        fired_for timestamptz, run_id bigint, stale boolean
    )
    LANGUAGE plpgsql
AS $$
DECLARE
    -- A constant, not clock_timestamp() in the WHERE clause: a volatile call
    -- there would make PostgreSQL read every row instead of the index range.
    due_by timestamptz := clock_timestamp() + p_lead;
    due record;
    new_run bigint;
    new_job bigint;
BEGIN
    FOR due IN
        SELECT t.id, t.next_run, t.fire_count
          FROM sisy_task AS t
         WHERE t.enabled AND t.next_run IS NOT NULL AND t.next_run <= due_by
         ORDER BY t.next_run
         LIMIT p_limit
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        new_run := NULL;
        IF due.next_run >= p_stale_before THEN
            INSERT INTO sisy_taskrun (task_id, scheduled_for, status, queued_at)
            VALUES (due.id, due.next_run, 'queued', clock_timestamp())
            ON CONFLICT (task_id, scheduled_for) DO NOTHING
            RETURNING sisy_taskrun.id INTO new_run;
        END IF;
        IF new_run IS NOT NULL THEN
            new_job := (procrastinate_defer_jobs_v1(ARRAY[
                ROW(p_queue, p_task_name, 0, NULL, NULL,
                    jsonb_build_object('run_id', new_run, 'at', extract(epoch FROM due.next_run)), NULL
                )::procrastinate_job_to_defer_v1
            ]))[1];
            UPDATE sisy_taskrun SET job_id = new_job WHERE sisy_taskrun.id = new_run;
            UPDATE sisy_task AS t
               SET last_run = due.next_run, fire_count = due.fire_count + 1
             WHERE t.id = due.id;
        END IF;
        RETURN QUERY
            SELECT t.id, t.schedule, t.timezone, t.start_running, t.end_running,
                   t.iterations, t.fire_count, t.wait_for_schedule,
                   due.next_run, new_run, due.next_run < p_stale_before
              FROM sisy_task AS t WHERE t.id = due.id;
    END LOOP;
END;
$$;

-- Running: start and finish a run ------------------------------------------------

-- Moves a queued run to running, or to skipped when its task disallows
-- overlap and another run of it is still executing on a live worker.
-- Returns the run's status afterwards: anything but 'running' means the
-- caller must not run the callable.
CREATE OR REPLACE FUNCTION sisy_start_run(p_run_id bigint, p_job_id bigint, p_worker text)
    RETURNS TABLE (status varchar, task_id bigint, scheduled_for timestamptz)
    LANGUAGE plpgsql
AS $$
DECLARE
    run sisy_taskrun;
    exclusive boolean;
BEGIN
    SELECT * INTO run FROM sisy_taskrun AS r WHERE r.id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::varchar, NULL::bigint, NULL::timestamptz;
        RETURN;
    END IF;
    IF run.status = 'queued' THEN
        SELECT NOT t.allow_overlap INTO exclusive FROM sisy_task AS t WHERE t.id = run.task_id;
        IF exclusive THEN
            -- Serialise starts of this task so two workers cannot both see
            -- "nothing running" (the key space is sisy's own: 0x5153).
            PERFORM pg_advisory_xact_lock(20819, (run.task_id % 2147483647)::integer);
        END IF;
        IF exclusive AND EXISTS (
            SELECT 1
              FROM sisy_taskrun AS other
              JOIN procrastinate_jobs AS job ON job.id = other.job_id
             WHERE other.task_id = run.task_id AND other.status = 'running'
               AND job.status = 'doing' AND job.worker_id IS NOT NULL
        ) THEN
            UPDATE sisy_taskrun AS r
               SET status = 'skipped', finished_at = clock_timestamp(), worker = p_worker,
                   error = 'skipped: the previous run is still running and the task does not allow overlap'
             WHERE r.id = p_run_id;
        ELSE
            UPDATE sisy_taskrun AS r
               SET status = 'running', started_at = clock_timestamp(), worker = p_worker,
                   job_id = COALESCE(r.job_id, p_job_id)
             WHERE r.id = p_run_id;
        END IF;
    END IF;
    RETURN QUERY SELECT r.status, r.task_id, r.scheduled_for FROM sisy_taskrun AS r WHERE r.id = p_run_id;
END;
$$;

-- Runs left 'running' by a worker that died: its job ended without the
-- runner's last word, lost its worker (procrastinate pruned it), or its
-- worker stopped sending heartbeats (procrastinate sends one every 10 s).
CREATE OR REPLACE FUNCTION sisy_fail_orphaned_runs() RETURNS integer
    LANGUAGE sql
AS $$
    WITH orphaned AS (
        UPDATE sisy_taskrun AS r
           SET status = 'failed', finished_at = clock_timestamp(),
               error = 'worker lost: the worker running this run stopped without reporting'
          FROM procrastinate_jobs AS job
         WHERE r.status = 'running' AND job.id = r.job_id
           AND (job.status <> 'doing'
                OR NOT EXISTS (
                    SELECT 1 FROM procrastinate_workers AS w
                     WHERE w.id = job.worker_id
                       AND w.last_heartbeat > now() - interval '60 seconds'))
        RETURNING r.id
    )
    SELECT count(*)::integer FROM orphaned;
$$;

-- Retention: deletes up to p_limit runs that finished before p_before, and
-- the procrastinate jobs that ran them, oldest first.
CREATE OR REPLACE FUNCTION sisy_prune_runs(p_before timestamptz, p_limit integer) RETURNS integer
    LANGUAGE sql
AS $$
    WITH old AS (
        SELECT r.id FROM sisy_taskrun AS r
         WHERE r.status IN ('succeeded', 'failed', 'skipped', 'cancelled')
           AND r.finished_at < p_before
         ORDER BY r.finished_at
         LIMIT p_limit
    ), pruned AS (
        DELETE FROM sisy_taskrun AS r USING old WHERE r.id = old.id RETURNING r.job_id
    ), pruned_jobs AS (
        DELETE FROM procrastinate_jobs AS job USING pruned
         WHERE job.id = pruned.job_id AND job.status NOT IN ('todo', 'doing')
        RETURNING job.id
    )
    SELECT count(*)::integer FROM pruned;
$$;

-- Views for people with psql ----------------------------------------------------------

CREATE OR REPLACE VIEW sisy_task_status AS
SELECT t.id, t.label, t.schedule, t.timezone, t.enabled,
       t.next_run, t.last_run, t.fire_count, t.iterations, t.finished_at, t.schedule_error,
       EXISTS (
           SELECT 1 FROM sisy_taskrun AS r WHERE r.task_id = t.id AND r.status = 'running'
       ) AS running,
       last.status AS last_status,
       last.started_at AS last_started_at,
       last.finished_at AS last_finished_at,
       last.error AS last_error
  FROM sisy_task AS t
  LEFT JOIN LATERAL (
      SELECT r.status, r.started_at, r.finished_at, r.error
        FROM sisy_taskrun AS r
       WHERE r.task_id = t.id AND r.status IN ('succeeded', 'failed', 'skipped', 'cancelled')
       ORDER BY r.scheduled_for DESC
       LIMIT 1
  ) AS last ON true;

CREATE OR REPLACE VIEW sisy_run_history AS
SELECT r.id, r.task_id, t.label, r.scheduled_for, r.status,
       r.started_at - r.scheduled_for AS lag,
       r.finished_at - r.started_at AS duration,
       r.queued_at, r.started_at, r.finished_at, r.worker, r.job_id, r.error
  FROM sisy_taskrun AS r
  JOIN sisy_task AS t ON t.id = r.task_id;
