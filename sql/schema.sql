-- sisy-pg: the whole current schema, for reading (and for a test).
--
-- It is what the files of sql/migrations/ add up to, applied in order: a
-- test builds one database from this file and one from the migrations and
-- compares their catalogs (tables, constraints, indexes, functions, triggers,
-- views). Databases are changed by the migration files only; when a release
-- adds one, this file is updated to match.
--
-- It relies on procrastinate's schema, through the functions of the section
-- "The seam to procrastinate" alone.
--
-- The upgrade rule (docs/concepts.md#the-upgrade-rule): the columns the Task
-- and TaskRun models map are frozen since 0001_initial. Sisy users' data
-- migrations depend on that migration only and save the real Task model,
-- possibly before a later sisy migration has run; so a later release adds
-- functions (a new _vN beside the old), triggers, views, indexes, constraints,
-- tables the models do not write, and keys of sisy_task.options /
-- sisy_taskrun.details -- never a column the models map. A new version of a
-- function operators call becomes what its unversioned name calls (section
-- "The operators' names"). Every function and view has a description (COMMENT
-- ON, for psql's \df+ and \dv+): a test checks that none lacks one.
--
-- The contract, whoever the writer (ORM save, queryset.update, bulk_create,
-- admin, a migration with historical models, psql):
--   * a change to what decides a task's instants clears its next_run, and
--     every committed change notifies the channel sisy_task_changed, so the
--     workers' planners re-plan it at once;
--   * disabling or deleting a task cancels its queued runs and their
--     procrastinate jobs in the same transaction;
--   * sisy_taskrun holds one row per (task, instant): the unique constraint
--     is what makes each fire happen exactly once;
--   * one task per label (sisy_task_label_unique).
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

-- Limits -------------------------------------------------------------------------

-- Why a JSON document of sisy_task (userdata, options, callable_info) is
-- beyond the limits, or NULL: nested more than 32 levels (objects and arrays;
-- '{}' is one level), a number of more than 4000 digits (Python reads at
-- most 4300), or more than 1 MiB of JSON text. The CHECK constraints
-- below apply it to every writer; sisy_start_run_v1 breaks a task whose row
-- predates them rather than hand it to a worker. sisy_pg/limits.py checks
-- the same in Python (HARD_MAX_DEPTH, HARD_MAX_BYTES: a test keeps them
-- equal), where settings may lower them. The depth costs no more than the
-- limit: a container at level 32 (the document is level 0) is one too many,
-- and nothing below it is read.
CREATE FUNCTION sisy_json_limits_error_v1(p_document jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path FROM CURRENT
AS $$
    SELECT CASE
        WHEN jsonb_path_exists(
                 p_document, 'strict $.**{32} ? (@.type() == "object" || @.type() == "array")'
             )
        THEN 'is nested more than 32 levels deep (at most 32)'
        WHEN jsonb_path_exists(
                 p_document, 'strict $.** ? (@.type() == "number" && (@ >= 1e4000 || @ <= -1e4000))'
             )
        THEN 'holds a number of more than 4000 digits (Python cannot read it back)'
        WHEN octet_length(p_document::text) > 1048576
        THEN format('is %s bytes of JSON (at most 1048576)', octet_length(p_document::text))
    END;
$$;
COMMENT ON FUNCTION sisy_json_limits_error_v1(jsonb) IS
    'internal: called by the CHECK constraints of sisy_task on every write, and by '
    'sisy_start_run_v1. Why JSON document p_document (userdata, options, callable_info) is '
    'beyond the limits: nested more than 32 levels, a number of more than 4000 digits, more '
    'than 1 MiB of JSON text. NULL when it is not.';

-- Tables -------------------------------------------------------------------------
-- Column types are those Django gives the fields of sisy_pg.models (a test
-- compares them); the defaults serve writers that bypass Django.

CREATE TABLE sisy_task (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    label varchar(255) NOT NULL  -- the trigger fills an empty one
        -- One task per label: taskinfo_with_label and Sisy-style reverse
        -- migrations (Task.objects.get(label=...)) find exactly one.
        CONSTRAINT sisy_task_label_unique UNIQUE,
    callable_info jsonb NOT NULL,
    schedule varchar(255) NOT NULL DEFAULT '* * * * *',
    timezone varchar(64) NOT NULL,  -- the trigger fills an empty one
    enabled boolean NOT NULL DEFAULT true,
    start_running timestamp with time zone NULL,
    end_running timestamp with time zone NULL,
    iterations integer NOT NULL DEFAULT 0 CONSTRAINT sisy_task_iterations_check CHECK (iterations >= 0),
    wait_for_schedule boolean NOT NULL DEFAULT true,
    allow_overlap boolean NOT NULL DEFAULT true,
    userdata jsonb NOT NULL DEFAULT '{}'::jsonb,
    options jsonb NOT NULL DEFAULT '{}'::jsonb,
    next_run timestamp with time zone NULL,
    last_run timestamp with time zone NULL,
    fire_count integer NOT NULL DEFAULT 0 CONSTRAINT sisy_task_fire_count_check CHECK (fire_count >= 0),
    finished_at timestamp with time zone NULL,
    -- Why the task cannot run (an unplannable schedule, a callable that cannot
    -- be resolved): a broken task is not fired until a writer fixes the row.
    error text NOT NULL DEFAULT '',
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    modified_at timestamp with time zone NOT NULL DEFAULT now(),
    -- The last line of defence for raw SQL.
    CONSTRAINT sisy_task_schedule_fields CHECK (
        cardinality(regexp_split_to_array(btrim(schedule), '\s+')) BETWEEN 5 AND 6
    ),
    CONSTRAINT sisy_task_userdata_is_object CHECK (jsonb_typeof(userdata) = 'object'),
    -- Depth and size (sisy_json_limits_error_v1): what Python's JSON parser,
    -- the admin and the workers can read.
    CONSTRAINT sisy_task_userdata_within_limits CHECK (sisy_json_limits_error_v1(userdata) IS NULL),
    CONSTRAINT sisy_task_options_within_limits CHECK (sisy_json_limits_error_v1(options) IS NULL),
    CONSTRAINT sisy_task_callable_info_within_limits
        CHECK (sisy_json_limits_error_v1(callable_info) IS NULL),
    -- No control character (Unicode category Cc): a newline or an escape
    -- sequence would forge lines of manage.py sisy list and of the logs.
    CONSTRAINT sisy_task_label_printable CHECK (label !~ '[\x01-\x1f\x7f-\u009f]'),
    -- The per-task policies (docs/reliability.md); sisy_pg.policies checks
    -- the same in Python with a message per key. Other keys are left to later
    -- releases.
    CONSTRAINT sisy_task_options_valid CHECK (
        jsonb_typeof(options) = 'object'
        AND coalesce(options ->> 'missed' IN ('coalesce', 'skip', 'all'), true)
        AND coalesce(options ->> 'overlap' IN ('allow', 'skip', 'buffer_one'), true)
        AND CASE coalesce(jsonb_typeof(options -> 'grace'), 'null')
                WHEN 'null' THEN true
                WHEN 'number' THEN (options ->> 'grace')::numeric BETWEEN 0 AND 315360000
                ELSE false END
        AND CASE coalesce(jsonb_typeof(options -> 'timeout'), 'null')
                WHEN 'null' THEN true
                WHEN 'number' THEN (options ->> 'timeout')::numeric > 0
                               AND (options ->> 'timeout')::numeric <= 315360000
                ELSE false END
        AND CASE coalesce(jsonb_typeof(options -> 'retries'), 'null')
                WHEN 'null' THEN true
                WHEN 'number' THEN (options ->> 'retries')::numeric BETWEEN 0 AND 100
                               AND (options ->> 'retries')::numeric % 1 = 0
                ELSE false END
        AND CASE coalesce(jsonb_typeof(options -> 'retry_delay'), 'null')
                WHEN 'null' THEN true
                WHEN 'number' THEN (options ->> 'retry_delay')::numeric > 0
                               AND (options ->> 'retry_delay')::numeric <= 315360000
                ELSE false END
        AND CASE coalesce(jsonb_typeof(options -> 'priority'), 'null')
                WHEN 'null' THEN true
                WHEN 'number' THEN (options ->> 'priority')::numeric BETWEEN -100 AND 100
                               AND (options ->> 'priority')::numeric % 1 = 0
                ELSE false END
        AND CASE coalesce(jsonb_typeof(options -> 'jitter'), 'null')
                WHEN 'null' THEN true
                WHEN 'number' THEN (options ->> 'jitter')::numeric BETWEEN 0 AND 86400
                ELSE false END
        -- A procrastinate queue: the NOTIFY channel procrastinate names after
        -- it must stay under PostgreSQL's 64 bytes.
        AND CASE coalesce(jsonb_typeof(options -> 'queue'), 'null')
                WHEN 'null' THEN true
                WHEN 'string' THEN (options ->> 'queue') ~ '^[A-Za-z0-9_.:-]{1,40}$'
                ELSE false END
    ),
    CONSTRAINT sisy_task_callable_has_path CHECK (
        jsonb_typeof(callable_info) = 'object'
        AND coalesce(jsonb_typeof(callable_info -> 'func_path') = 'string', false)
    ),
    CONSTRAINT sisy_task_running_window CHECK (
        start_running IS NULL OR end_running IS NULL OR end_running >= start_running
    )
);

CREATE TABLE sisy_taskrun (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    task_id bigint NOT NULL
        CONSTRAINT sisy_taskrun_task_id_fk REFERENCES sisy_task (id) DEFERRABLE INITIALLY DEFERRED,
    scheduled_for timestamp with time zone NOT NULL,
    status varchar(16) NOT NULL DEFAULT 'queued',
    queued_at timestamp with time zone NOT NULL DEFAULT now(),
    started_at timestamp with time zone NULL,
    finished_at timestamp with time zone NULL,
    error text NOT NULL DEFAULT '',
    traceback text NOT NULL DEFAULT '',
    job_id bigint NULL,
    worker varchar(255) NOT NULL DEFAULT '',
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- What makes each (task, instant) run exactly once, whatever the number
    -- of workers. Its index also serves the foreign key.
    CONSTRAINT sisy_taskrun_once_per_instant UNIQUE (task_id, scheduled_for),
    CONSTRAINT sisy_taskrun_status_known CHECK (
        status IN (
            'queued', 'running', 'succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled'
        )
    ),
    CONSTRAINT sisy_taskrun_details_is_object CHECK (jsonb_typeof(details) = 'object')
);

-- When housekeeping (dead workers' runs, retention) was last done, so that
-- one planner of the cluster does it per period (sisy_housekeeping_due_v1).
CREATE TABLE sisy_housekeeping (
    id boolean PRIMARY KEY DEFAULT true CONSTRAINT sisy_housekeeping_one_row CHECK (id),
    last_at timestamp with time zone NOT NULL DEFAULT '-infinity'
);
INSERT INTO sisy_housekeeping DEFAULT VALUES;

-- One row per task paused with a note or an end (see the section Pauses); a
-- task paused without either has none. paused_at and paused_by: when and by
-- whom the note and end were last set. Here, not in its section: the view
-- sisy_task_status reads it. No foreign key: Django's flush truncates
-- sisy_task without CASCADE; sisy_task_forget_pause_v1 deletes a task's row
-- with it.
CREATE TABLE sisy_task_pause (
    task_id bigint PRIMARY KEY,
    note text NOT NULL DEFAULT ''
        CONSTRAINT sisy_task_pause_note_length CHECK (length(note) <= 1000),
    until timestamp with time zone NULL,  -- NULL: paused until resumed by hand
    paused_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    paused_by text NOT NULL DEFAULT ''
);
-- The next pause to end: an index range, whatever the number of tasks.
CREATE INDEX sisy_task_pause_until_idx ON sisy_task_pause (until) WHERE until IS NOT NULL;

-- Indexes: planning cost follows what is due, not what is defined ------------

-- The next instant to wake for, and the tasks due now (sisy_claim_due_v1).
CREATE INDEX sisy_task_due_idx
    ON sisy_task (next_run) WHERE enabled AND next_run IS NOT NULL;
-- Tasks waiting for the planner (new, or changed by a writer).
CREATE INDEX sisy_task_to_plan_idx
    ON sisy_task (id)
    WHERE enabled AND next_run IS NULL AND finished_at IS NULL AND error = '';
-- Finished runs by age (retention, sisy_prune_runs_v1).
CREATE INDEX sisy_taskrun_finished_idx
    ON sisy_taskrun (finished_at)
    WHERE status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled');
-- Queued and running runs of a task (cancellation, overlap check).
CREATE INDEX sisy_taskrun_active_idx
    ON sisy_taskrun (task_id, status) WHERE status IN ('queued', 'running');
-- Queued runs by job (a job carries several runs: cancelling one run cancels
-- the job only when none of the others still waits).
CREATE INDEX sisy_taskrun_queued_job_idx
    ON sisy_taskrun (job_id) WHERE status = 'queued';

-- The seam to procrastinate ----------------------------------------------------------
-- The only SQL of sisy-pg that knows procrastinate's schema (its job type,
-- jobs and workers tables, and versioned functions). The Python half of the
-- seam is sisy_pg/procrastinate_seam.py; tests/unit/test_procrastinate_seam.py
-- fails loudly if an upgrade of procrastinate changes what this relies on.

-- Defers the jobs that execute runs p_run_ids: one job for up to
-- p_runs_per_job runs due at the same instant p_ats[i] whose tasks have the
-- same priority (options.priority, as sisy_policy_v1) and queue (the
-- procrastinate queue options.queue, else p_queue), which its runner
-- holds until then, fetched from p_scheduled_at on (NULL: at once). A job
-- carries several runs so that the runs due at one instant cost one fetch
-- and one worker slot per group, not one each. The job's priority is its
-- runs' (procrastinate fetches higher first), and its arguments are the
-- runs (run_ids), their tasks (task_ids, in the same order: the runner
-- shares its callable slots between tasks before it starts a run) and the
-- instant (at, epoch seconds). Returns each run's job id, in the order of
-- p_run_ids. The job type's fields are set by name, not position.
CREATE FUNCTION sisy_defer_run_jobs_v1(
    p_queue text, p_task_name text, p_run_ids bigint[], p_ats timestamptz[],
    p_runs_per_job integer, p_scheduled_at timestamptz
)
    RETURNS bigint[]
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    jobs procrastinate_job_to_defer_v1[] := '{}';
    job procrastinate_job_to_defer_v1;
    task_of bigint[];  -- each run's task
    priority_of integer[];  -- each run's task's priority
    queue_of text[];  -- each run's task's queue
    chunk_of integer[];  -- each run's job, as an index into jobs
    chunk record;
    job_ids bigint[];
BEGIN
    IF coalesce(cardinality(p_run_ids), 0) = 0 THEN
        RETURN '{}';
    END IF;
    SELECT array_agg(r.task_id ORDER BY u.ord),
           array_agg(coalesce((t.options ->> 'priority')::numeric::integer, 0) ORDER BY u.ord),
           array_agg(coalesce(t.options ->> 'queue', p_queue) ORDER BY u.ord)
      INTO task_of, priority_of, queue_of
      FROM unnest(p_run_ids) WITH ORDINALITY AS u(run_id, ord)
      LEFT JOIN sisy_taskrun AS r ON r.id = u.run_id
      LEFT JOIN sisy_task AS t ON t.id = r.task_id;
    SELECT array_agg(ranked.chunk ORDER BY ranked.ord) INTO chunk_of
      FROM (
          SELECT numbered.ord,
                 dense_rank() OVER (
                     ORDER BY numbered.at, numbered.priority DESC, numbered.queue,
                              (numbered.n - 1) / greatest(p_runs_per_job, 1)
                 )::integer AS chunk
            FROM (
                SELECT r.ord, r.at, r.priority, r.queue,
                       row_number() OVER (
                           PARTITION BY r.at, r.priority, r.queue ORDER BY r.ord
                       ) AS n
                  FROM unnest(p_ats, priority_of, queue_of) WITH ORDINALITY
                       AS r(at, priority, queue, ord)
            ) AS numbered
      ) AS ranked;
    FOR chunk IN
        SELECT min(u.at) AS at, min(u.priority) AS priority, min(u.queue) AS queue,
               array_agg(u.run_id ORDER BY u.ord) AS run_ids,
               array_agg(u.task_id ORDER BY u.ord) AS task_ids
          FROM unnest(p_run_ids, p_ats, priority_of, queue_of, task_of, chunk_of) WITH ORDINALITY
               AS u(run_id, at, priority, queue, task_id, chunk, ord)
         GROUP BY u.chunk
         ORDER BY u.chunk
    LOOP
        job := NULL;
        job.queue_name := chunk.queue;
        job.task_name := p_task_name;
        job.priority := chunk.priority;
        job.scheduled_at := p_scheduled_at;
        job.args := jsonb_build_object(
            'run_ids', to_jsonb(chunk.run_ids), 'task_ids', to_jsonb(chunk.task_ids),
            'at', extract(epoch FROM chunk.at)
        );
        jobs := jobs || job;
    END LOOP;
    job_ids := procrastinate_defer_jobs_v1(jobs);
    RETURN ARRAY(SELECT job_ids[u.chunk] FROM unnest(chunk_of) WITH ORDINALITY AS u(chunk, ord)
                  ORDER BY u.ord);
END;
$$;
COMMENT ON FUNCTION sisy_defer_run_jobs_v1(
    text, text, bigint[], timestamptz[], integer, timestamptz
) IS
    'internal: called by the planner''s functions. Defers the procrastinate jobs (task '
    'p_task_name, queue p_queue unless a task''s options.queue says another) that execute runs '
    'p_run_ids due at p_ats, up to p_runs_per_job runs a job, fetched from p_scheduled_at on. '
    'Returns each run''s job id.';

-- Cancels a job that has not started (a job already fetched is left alone:
-- its runner sees that its run is no longer queued and does nothing).
CREATE FUNCTION sisy_cancel_run_job_v1(p_job_id bigint) RETURNS void
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    SELECT procrastinate_cancel_job_v1(p_job_id, false, false);
$$;
COMMENT ON FUNCTION sisy_cancel_run_job_v1(bigint) IS
    'internal: called by the triggers on sisy_taskrun. Cancels procrastinate job p_job_id if no '
    'worker has fetched it yet.';

-- Whether a job is being executed by a live worker: one whose procrastinate
-- heartbeat is younger than p_stalled_after (procrastinate's
-- stalled_worker_timeout).
CREATE FUNCTION sisy_job_alive_v1(p_job_id bigint, p_stalled_after interval) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT EXISTS (
        SELECT 1
          FROM procrastinate_jobs AS job
          JOIN procrastinate_workers AS w ON w.id = job.worker_id
         WHERE job.id = p_job_id AND job.status = 'doing'
           AND w.last_heartbeat > now() - p_stalled_after
    );
$$;
COMMENT ON FUNCTION sisy_job_alive_v1(bigint, interval) IS
    'internal: called by the planner''s functions and the health probe. Whether job p_job_id is '
    'being executed by a worker whose heartbeat is younger than p_stalled_after.';

-- Whether a job may still run: not yet fetched, or being executed by a live
-- worker (see sisy_job_alive_v1). False for a job that ended, vanished, or
-- whose worker died.
CREATE FUNCTION sisy_job_pending_v1(p_job_id bigint, p_stalled_after interval) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT EXISTS (
        SELECT 1 FROM procrastinate_jobs AS job WHERE job.id = p_job_id AND job.status = 'todo'
    ) OR sisy_job_alive_v1(p_job_id, p_stalled_after);
$$;
COMMENT ON FUNCTION sisy_job_pending_v1(bigint, interval) IS
    'internal: called by the planner''s functions and the Django tasks backend. Whether job '
    'p_job_id may still run: not fetched yet, or executed by a live worker (sisy_job_alive_v1).';

-- Whether a 'running' run is still in progress, by its job (p_job_id) and details:
-- its callable runs under a job of a live worker (sisy_job_alive_v1), or it enqueued a
-- Django task and follows it (details.task_result_id): while the task's procrastinate job
-- (sisy-pg's backend, details.task_job_id) may still run, and, on other backends, until
-- task_finished or the task's timeout closes the run. What the overlap policies, the
-- planner's buffering and the housekeeping all ask.
CREATE FUNCTION sisy_run_alive_v1(p_job_id bigint, p_details jsonb, p_stalled_after interval)
    RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT CASE
        WHEN p_details ? 'task_result_id' THEN
            NOT p_details ? 'task_job_id'
            OR sisy_job_pending_v1((p_details ->> 'task_job_id')::bigint, p_stalled_after)
        ELSE p_job_id IS NOT NULL AND sisy_job_alive_v1(p_job_id, p_stalled_after)
    END;
$$;
COMMENT ON FUNCTION sisy_run_alive_v1(bigint, jsonb, interval) IS
    'internal: called by the planner''s functions and the housekeeping. Whether a running run '
    'is still in progress, by its job p_job_id and its details p_details.';

-- Deletes the jobs that ran pruned runs (never one still to do or doing).
CREATE FUNCTION sisy_delete_finished_jobs_v1(p_job_ids bigint[]) RETURNS integer
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    WITH deleted AS (
        DELETE FROM procrastinate_jobs AS job
         WHERE job.id = ANY (p_job_ids) AND job.status NOT IN ('todo', 'doing')
        RETURNING job.id
    )
    SELECT count(*)::integer FROM deleted;
$$;
COMMENT ON FUNCTION sisy_delete_finished_jobs_v1(bigint[]) IS
    'internal: called by the retention (sisy_prune_runs_v1). Deletes the procrastinate jobs '
    'p_job_ids that ended (never one to do or doing). Returns how many.';

-- How many procrastinate workers are alive: their heartbeat is younger than
-- p_stalled_after (procrastinate's stalled_worker_timeout). Every worker that
-- serves the sisy queue runs a planner, so none means nothing fires
-- (manage.py sisy health).
CREATE FUNCTION sisy_live_workers_v1(p_stalled_after interval) RETURNS integer
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT count(*)::integer
      FROM procrastinate_workers AS w
     WHERE w.last_heartbeat > now() - p_stalled_after;
$$;
COMMENT ON FUNCTION sisy_live_workers_v1(interval) IS
    'internal: granted to the worker role (sisy_health judges the workers). How many '
    'procrastinate workers have a heartbeat younger than p_stalled_after.';

-- procrastinate's workers and their last heartbeat: sisy_worker rows join
-- them on id (sisy_health_v1).
CREATE FUNCTION sisy_worker_heartbeats_v1()
    RETURNS TABLE (worker_id bigint, last_heartbeat timestamptz)
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT w.id, w.last_heartbeat FROM procrastinate_workers AS w;
$$;
COMMENT ON FUNCTION sisy_worker_heartbeats_v1() IS
    'internal: called by sisy_health_v1 and sisy_metrics_v1. procrastinate''s workers '
    '(worker_id) and their last heartbeat.';

-- Triggers on sisy_task ----------------------------------------------------------

CREATE FUNCTION sisy_task_before_write_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    withdrawn integer;
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
        -- The new definition may mend a broken task: it is tried again. A
        -- paused task keeps its error (it shows broken) until it is resumed.
        IF NEW.enabled THEN
            NEW.error := '';
        END IF;
        IF NEW.enabled AND NOT OLD.enabled THEN
            -- Re-enabled: the planner decides again whether it is finished.
            NEW.finished_at := NULL;
        END IF;
        IF NEW.enabled AND OLD.enabled
           AND (NEW.schedule, NEW.timezone, NEW.start_running, NEW.end_running)
               IS DISTINCT FROM
               (OLD.schedule, OLD.timezone, OLD.start_running, OLD.end_running)
        THEN
            -- Fires already claimed for the old instants and not started are
            -- withdrawn (their jobs cancelled, their fires not counted): the
            -- new schedule decides from now. A retry continues a run that
            -- started, and stays; so do the runs a backfill asked for.
            WITH gone AS (
                DELETE FROM sisy_taskrun AS r
                 WHERE r.task_id = NEW.id AND r.status = 'queued'
                   AND NOT r.details ?| ARRAY['attempts', 'backfill']
                RETURNING r.id
            )
            SELECT count(*) INTO withdrawn FROM gone;
            IF withdrawn > 0 THEN
                NEW.fire_count := greatest(NEW.fire_count - withdrawn, 0);
                NEW.last_run := (
                    SELECT max(r.scheduled_for) FROM sisy_taskrun AS r
                     WHERE r.task_id = NEW.id
                       AND r.status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out')
                );
            END IF;
        END IF;
    ELSIF TG_OP = 'UPDATE'
          AND (NEW.callable_info, NEW.userdata, NEW.options)
              IS DISTINCT FROM (OLD.callable_info, OLD.userdata, OLD.options) THEN
        -- A new callable, or userdata / options brought within the limits,
        -- may mend a broken task: the planner plans it again (a broken task
        -- has no next_run) and its next run tries it.
        NEW.error := '';
    END IF;

    -- Raw SQL edits of the definition show in modified_at as ORM saves do.
    IF TG_OP = 'UPDATE'
       AND NEW.modified_at IS NOT DISTINCT FROM OLD.modified_at
       AND (NEW.label, NEW.callable_info, NEW.schedule, NEW.timezone, NEW.enabled,
            NEW.start_running, NEW.end_running, NEW.iterations, NEW.wait_for_schedule,
            NEW.allow_overlap, NEW.userdata, NEW.options)
           IS DISTINCT FROM
           (OLD.label, OLD.callable_info, OLD.schedule, OLD.timezone, OLD.enabled,
            OLD.start_running, OLD.end_running, OLD.iterations, OLD.wait_for_schedule,
            OLD.allow_overlap, OLD.userdata, OLD.options)
    THEN
        NEW.modified_at := now();
    END IF;

    IF NOT NEW.enabled THEN
        NEW.next_run := NULL;
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION sisy_task_before_write_v1() IS
    'internal: the trigger sisy_task_before_write_v1, before each INSERT or UPDATE of '
    'sisy_task. Fills an empty label and time zone, refuses an unknown time zone, and clears '
    'next_run when what decides the instants changes (the planners re-plan it).';

CREATE FUNCTION sisy_task_after_disable_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    -- A user disabled the task (a finished task keeps its last queued run).
    UPDATE sisy_taskrun
       SET status = 'cancelled', finished_at = clock_timestamp(),
           error = 'cancelled: the task was disabled before this run started',
           details = details || '{"reason": "disabled"}'::jsonb
     WHERE task_id = NEW.id AND status = 'queued';
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_task_after_disable_v1() IS
    'internal: the trigger sisy_task_after_disable_v1. A task disabled: its queued runs are '
    'cancelled (reason disabled), and their jobs.';

CREATE FUNCTION sisy_task_before_delete_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    -- The ORM deletes the runs itself; raw SQL relies on this.
    DELETE FROM sisy_taskrun WHERE task_id = OLD.id;
    RETURN OLD;
END;
$$;
COMMENT ON FUNCTION sisy_task_before_delete_v1() IS
    'internal: the trigger sisy_task_before_delete_v1. A task deleted takes its runs with it.';

CREATE FUNCTION sisy_task_notify_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    -- One notification per transaction (PostgreSQL folds identical ones),
    -- however many rows the statement touched.
    PERFORM pg_notify('sisy_task_changed', '');
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_task_notify_v1() IS
    'internal: the trigger sisy_task_notify_v1, after each statement that writes sisy_task. '
    'Notifies the channel sisy_task_changed: the workers'' planners re-plan at once.';

CREATE TRIGGER sisy_task_before_write_v1
    BEFORE INSERT OR UPDATE ON sisy_task
    FOR EACH ROW EXECUTE FUNCTION sisy_task_before_write_v1();

CREATE TRIGGER sisy_task_after_disable_v1
    AFTER UPDATE OF enabled ON sisy_task
    FOR EACH ROW WHEN (OLD.enabled AND NOT NEW.enabled AND NEW.finished_at IS NULL)
    EXECUTE FUNCTION sisy_task_after_disable_v1();

CREATE TRIGGER sisy_task_before_delete_v1
    BEFORE DELETE ON sisy_task
    FOR EACH ROW EXECUTE FUNCTION sisy_task_before_delete_v1();

CREATE TRIGGER sisy_task_notify_v1
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sisy_task
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_notify_v1();

-- Triggers on sisy_taskrun --------------------------------------------------------

CREATE FUNCTION sisy_taskrun_cancel_job_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    run sisy_taskrun := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    -- A queued run that will not happen must not leave a job to be fetched,
    -- unless that job carries other runs still to happen.
    IF run.job_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM sisy_taskrun AS other
         WHERE other.job_id = run.job_id AND other.status = 'queued' AND other.id <> run.id
    ) THEN
        PERFORM sisy_cancel_run_job_v1(run.job_id);
    END IF;
    RETURN run;
END;
$$;
COMMENT ON FUNCTION sisy_taskrun_cancel_job_v1() IS
    'internal: the triggers sisy_taskrun_cancel_job_v1 and sisy_taskrun_delete_cancels_job_v1. '
    'A queued run cancelled or deleted cancels its job, unless the job carries other queued '
    'runs.';

CREATE FUNCTION sisy_taskrun_cancel_all_jobs_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM sisy_cancel_run_job_v1(job_id)
       FROM sisy_taskrun WHERE status = 'queued' AND job_id IS NOT NULL;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_taskrun_cancel_all_jobs_v1() IS
    'internal: the trigger sisy_taskrun_truncate_cancels_jobs_v1. A TRUNCATE of sisy_taskrun '
    'cancels the jobs of its queued runs.';

CREATE FUNCTION sisy_taskrun_notify_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_notify(
        'sisy_run_changed',
        json_build_object('run_id', NEW.id, 'task_id', NEW.task_id, 'status', NEW.status)::text
    );
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_taskrun_notify_v1() IS
    'internal: the trigger sisy_taskrun_notify_v1. Notifies the channel sisy_run_changed of '
    'each run inserted or whose status changed (run_id, task_id, status).';

CREATE TRIGGER sisy_taskrun_cancel_job_v1
    AFTER UPDATE OF status ON sisy_taskrun
    FOR EACH ROW WHEN (OLD.status = 'queued' AND NEW.status = 'cancelled')
    EXECUTE FUNCTION sisy_taskrun_cancel_job_v1();

CREATE TRIGGER sisy_taskrun_delete_cancels_job_v1
    AFTER DELETE ON sisy_taskrun
    FOR EACH ROW WHEN (OLD.status = 'queued')
    EXECUTE FUNCTION sisy_taskrun_cancel_job_v1();

CREATE TRIGGER sisy_taskrun_truncate_cancels_jobs_v1
    BEFORE TRUNCATE ON sisy_taskrun
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_taskrun_cancel_all_jobs_v1();

CREATE TRIGGER sisy_taskrun_notify_v1
    AFTER INSERT OR UPDATE OF status ON sisy_taskrun
    FOR EACH ROW EXECUTE FUNCTION sisy_taskrun_notify_v1();

-- Firing: claim what is due, decide, record -------------------------------------------
-- One planner transaction: sisy_claim_due_v1 locks the due tasks and tells
-- what runs each has waiting or running; the planner applies the task's
-- policies (sisy_pg/policies.py: missed instants, overlap, at most one run
-- waiting) and sisy_store_decisions_v1 records every decision -- a run to
-- execute, or a row saying why an instant is not run -- with each task's
-- next instant. Every decision is taken on the database's clock.

-- Locks up to p_limit tasks due within p_lead (skipping rows another planner
-- holds), those of highest priority (options.priority, as sisy_policy_v1)
-- first, then the earliest due: a priority task is claimed in the first
-- batch even when thousands are due. The due rows are a range of
-- sisy_task_due_idx, sorted: the cost follows what is due. For each: its
-- planning columns and policies, the instant due, the database's now, its
-- waiting runs (queued, whose job may still run: the earliest and how many)
-- and its latest run executing on a live worker (one whose heartbeat is
-- younger than p_stalled_after).
CREATE FUNCTION sisy_claim_due_v1(p_limit integer, p_lead interval, p_stalled_after interval)
    RETURNS TABLE (
        id bigint, schedule varchar, timezone varchar,
        start_running timestamptz, end_running timestamptz,
        iterations integer, fire_count integer, wait_for_schedule boolean,
        allow_overlap boolean, options jsonb,
        instant timestamptz, claimed_at timestamptz,
        waiting_run_id bigint, waiting_for timestamptz, waiting_count integer,
        running_run_id bigint, running_for timestamptz
    )
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    -- The clock is read once (an InitPlan): a volatile call in the WHERE
    -- clause would make PostgreSQL read every row instead of the index range.
    WITH clock AS MATERIALIZED (
        SELECT clock_timestamp() AS now
    ), due AS (
        SELECT t.*
          FROM sisy_task AS t
         WHERE t.enabled AND t.next_run IS NOT NULL
           AND t.next_run <= (SELECT clock.now FROM clock) + p_lead
         ORDER BY coalesce((t.options ->> 'priority')::numeric::integer, 0) DESC, t.next_run
         LIMIT p_limit
           FOR NO KEY UPDATE SKIP LOCKED
    )
    SELECT due.id, due.schedule, due.timezone, due.start_running, due.end_running,
           due.iterations, due.fire_count, due.wait_for_schedule,
           due.allow_overlap, due.options,
           due.next_run, (SELECT clock.now FROM clock),
           waiting.first_id, waiting.first_for, waiting.count,
           running.id, running.scheduled_for
      FROM due
      LEFT JOIN LATERAL (
          SELECT (array_agg(r.id ORDER BY r.scheduled_for))[1] AS first_id,
                 min(r.scheduled_for) AS first_for,
                 count(*)::integer AS count
            FROM sisy_taskrun AS r
           WHERE r.task_id = due.id AND r.status = 'queued'
             -- a run buffered behind a running one, or held for its jitter,
             -- has no job yet
             AND (r.job_id IS NULL OR sisy_job_pending_v1(r.job_id, p_stalled_after))
             -- a backfill's runs are no fire of the schedule to coalesce into
             AND NOT r.details ? 'backfill'
      ) AS waiting ON true
      LEFT JOIN LATERAL (
          SELECT r.id, r.scheduled_for
            FROM sisy_taskrun AS r
           WHERE r.task_id = due.id AND r.status = 'running'
             AND sisy_run_alive_v1(r.job_id, r.details, p_stalled_after)
           ORDER BY r.scheduled_for DESC
           LIMIT 1
      ) AS running ON true
     ORDER BY coalesce((due.options ->> 'priority')::numeric::integer, 0) DESC, due.next_run;
$$;
COMMENT ON FUNCTION sisy_claim_due_v1(integer, interval, interval) IS
    'internal: called by the planner (sql/queries.sql, claim_due). Locks up to p_limit tasks '
    'due within p_lead, highest priority first, with what each needs to decide: its planning '
    'columns, the instant due, its runs waiting and running (on workers alive within '
    'p_stalled_after).';

-- Records the planner's decisions for the tasks it claimed (or planned):
--   * runs: one row per (task, instant) decided. 'queued' runs are fires:
--     each gets its procrastinate job (unless it waits, buffered, behind a
--     running run: details.buffered_behind) and counts in the task's
--     fire_count and last_run. Any other status ('skipped', 'missed') is the
--     record of an instant not run, with its reason in error and details.
--   * plans: each task's next instant, its end, or why it cannot be planned;
--     a task's fires are counted with its plan, so every task given runs
--     is given a plan too.
-- Returns the number of runs queued.
CREATE FUNCTION sisy_store_decisions_v1(
    p_queue text,
    p_task_name text,
    p_run_task_ids bigint[],
    p_run_instants timestamptz[],
    p_run_statuses text[],
    p_run_errors text[],
    p_run_details jsonb[],
    p_plan_task_ids bigint[],
    p_plan_next_runs timestamptz[],
    p_plan_finished boolean[],
    p_plan_errors text[],
    p_runs_per_job integer
)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    to_defer bigint[];
    instants timestamptz[];
BEGIN
    WITH inserted AS (
        INSERT INTO sisy_taskrun AS r
               (task_id, scheduled_for, status, queued_at, finished_at, error, details)
        SELECT d.task_id, d.instant, d.status, clock_timestamp(),
               CASE WHEN d.status = 'queued' THEN NULL ELSE clock_timestamp() END,
               d.error, d.details
          FROM unnest(p_run_task_ids, p_run_instants, p_run_statuses, p_run_errors, p_run_details)
               AS d(task_id, instant, status, error, details)
        ON CONFLICT (task_id, scheduled_for) DO NOTHING
        RETURNING r.id, r.task_id, r.scheduled_for, r.status, r.details
    ), fired AS (
        SELECT i.task_id, max(i.scheduled_for) AS last_run, count(*)::integer AS count
          FROM inserted AS i
         WHERE i.status = 'queued'
         GROUP BY i.task_id
    ), planned AS (
        -- One write per task: its plan, and the fires just recorded (every
        -- claimed task has a plan).
        UPDATE sisy_task AS t
           SET next_run = p.next_run,
               enabled = t.enabled AND NOT p.finished,
               finished_at = CASE WHEN p.finished THEN clock_timestamp() ELSE t.finished_at END,
               error = p.error,
               last_run = coalesce(f.last_run, t.last_run),
               -- Saturated: one task at the integer's end must not fail the batch.
               fire_count = least(t.fire_count::bigint + coalesce(f.count, 0), 2147483647)::integer
          FROM unnest(p_plan_task_ids, p_plan_next_runs, p_plan_finished, p_plan_errors)
               AS p(task_id, next_run, finished, error)
          LEFT JOIN fired AS f ON f.task_id = p.task_id
         WHERE t.id = p.task_id
    )
    SELECT array_agg(i.id ORDER BY i.id), array_agg(i.scheduled_for ORDER BY i.id)
      INTO to_defer, instants
      FROM inserted AS i
     -- A run delayed by its jitter is held, without a job, until its due_at is
     -- within the lead time (sisy_release_jittered_runs_v1).
     WHERE i.status = 'queued' AND NOT i.details ?| ARRAY['buffered_behind', 'jitter'];

    IF to_defer IS NOT NULL THEN
        UPDATE sisy_taskrun AS r
           SET job_id = j.job_id
          FROM unnest(
                   to_defer,
                   sisy_defer_run_jobs_v1(
                       p_queue, p_task_name, to_defer, instants, p_runs_per_job, NULL
                   )
               )
               AS j(run_id, job_id)
         WHERE r.id = j.run_id;
    END IF;

    RETURN coalesce(cardinality(to_defer), 0);
END;
$$;
COMMENT ON FUNCTION sisy_store_decisions_v1(
    text, text, bigint[], timestamptz[], text[], text[], jsonb[], bigint[], timestamptz[],
    boolean[], text[], integer
) IS
    'internal: called by the planner (store_decisions). Records the planner''s decisions: the '
    'runs to execute (queued, with their jobs) or the instants not run (with why), and each '
    'task''s next instant, end or error. Returns the number of runs queued.';

-- A task's policies, defaults filled in: as sisy_pg.policies.Policy.of (a test
-- keeps the two equal). grace defaults to p_default_grace (SISY_GRACE).
-- priority is procrastinate's job priority of the task's runs (higher first);
-- sisy_claim_due_v1 and sisy_defer_run_jobs_v1 read it from the options
-- with the same expression, per row (and sisy_defer_run_jobs_v1 the queue;
-- NULL: SISY_QUEUE). jitter: the most seconds a run is delayed after its
-- instant (sisy_pg.policies.jitter_delay).
CREATE FUNCTION sisy_policy_v1(p_options jsonb, p_allow_overlap boolean, p_default_grace interval)
    RETURNS TABLE (
        missed text, overlap text, grace interval, timeout float8, retries integer,
        retry_delay float8, priority integer, jitter float8, queue text
    )
    LANGUAGE sql IMMUTABLE
    SET search_path FROM CURRENT
AS $$
    SELECT coalesce(p_options ->> 'missed', 'coalesce'),
           coalesce(p_options ->> 'overlap', CASE WHEN p_allow_overlap THEN 'allow' ELSE 'skip' END),
           coalesce(make_interval(secs => (p_options ->> 'grace')::float8), p_default_grace),
           (p_options ->> 'timeout')::float8,
           coalesce((p_options ->> 'retries')::numeric::integer, 0),
           coalesce((p_options ->> 'retry_delay')::float8, 10),
           coalesce((p_options ->> 'priority')::numeric::integer, 0),
           coalesce((p_options ->> 'jitter')::float8, 0),
           p_options ->> 'queue';
$$;
COMMENT ON FUNCTION sisy_policy_v1(jsonb, boolean, interval) IS
    'internal: called by the planner''s and the runners'' functions. A task''s policies read '
    'from its options p_options (missed, overlap, grace, timeout, retries, retry_delay, '
    'priority, jitter, queue), with their defaults: p_allow_overlap, p_default_grace '
    '(SISY_GRACE).';

-- Running: start, finish, retry, time out, break -----------------------------------

-- Moves a queued run to running, unless:
--   * another transaction holds the run's row (a writer cancelling it):
--     'busy', nothing changes, and `wait` says when to try again -- a
--     runner never waits for one run's lock while holding another's;
--   * it is early: the instant it may start (details.due_at, else its
--     instant) is still to come on the database's clock: 'early', nothing
--     changes, and `wait` says how many seconds remain (a runner holds a run
--     claimed ahead until its instant on its estimate of this clock; this
--     makes the database's clock the judge);
--   * it reaches a worker later than the task's grace after it was due
--     (details.due_at -- a catch-up's claim or a released buffered run's
--     start -- or its instant): 'missed', not run late (not for the policy
--     missed='all', which runs every instant, nor for a retry);
--   * the task does not allow overlap and another of its runs executes on
--     a live worker: 'skipped', naming that run;
--   * the task's row is beyond the limits (sisy_json_limits_error_v1): the
--     run fails and the task is broken (sisy_break_task_v1): 'broken'.
-- Returns the run's status afterwards (anything but 'running' means the
-- caller must not run the callable: a run already running under another job
-- is 'started_elsewhere'), its attempt (1 for the first), when it started
-- and, for a busy or early run, the seconds to wait.
CREATE FUNCTION sisy_start_run_v1(
    p_run_id bigint,
    p_job_id bigint,
    p_worker text,
    p_stalled_after interval,
    p_default_grace interval
)
    RETURNS TABLE (
        status varchar, task_id bigint, scheduled_for timestamptz, attempt integer,
        started_at timestamptz, wait float8
    )
    LANGUAGE plpgsql
    ROWS 1  -- one row per run: lets a caller join its task by primary key
    SET search_path FROM CURRENT
AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    run sisy_taskrun;
    task sisy_task;
    policy record;
    late_by interval;
    other_id bigint;
    other_for timestamptz;
    started_now boolean := false;
    beyond_limits text;
BEGIN
    SELECT * INTO run FROM sisy_taskrun AS r WHERE r.id = p_run_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN QUERY SELECT CASE WHEN EXISTS (SELECT 1 FROM sisy_taskrun AS r WHERE r.id = p_run_id)
                                 THEN 'busy' ELSE 'missing' END::varchar,
                            NULL::bigint, NULL::timestamptz, NULL::integer, NULL::timestamptz,
                            0.01::float8;
        RETURN;
    END IF;
    IF run.status = 'queued'
       AND now_ < coalesce((run.details ->> 'due_at')::timestamptz, run.scheduled_for)
    THEN
        RETURN QUERY SELECT 'early'::varchar, run.task_id, run.scheduled_for, NULL::integer,
                            NULL::timestamptz,
                            extract(epoch FROM coalesce(
                                (run.details ->> 'due_at')::timestamptz, run.scheduled_for
                            ) - now_)::float8;
        RETURN;
    END IF;
    IF run.status = 'queued' THEN
        SELECT * INTO task FROM sisy_task AS t WHERE t.id = run.task_id;
        -- A row written before the limits (or past the constraints) is not
        -- handed to a worker, whose JSON parser it could exhaust: the task is
        -- broken, with the reason, until a writer fixes the row.
        beyond_limits := coalesce(
            'userdata ' || sisy_json_limits_error_v1(task.userdata),
            'options ' || sisy_json_limits_error_v1(task.options),
            'callable_info ' || sisy_json_limits_error_v1(task.callable_info)
        );
        IF beyond_limits IS NOT NULL THEN
            UPDATE sisy_taskrun AS r
               SET status = 'running', started_at = now_, worker = p_worker,
                   job_id = coalesce(r.job_id, p_job_id)
             WHERE r.id = run.id;
            PERFORM sisy_break_task_v1(
                run.id, beyond_limits || ': the row is beyond the limits of sisy_task', ''
            );
            RETURN QUERY SELECT 'broken'::varchar, run.task_id, run.scheduled_for, NULL::integer,
                                now_, NULL::float8;
            RETURN;
        END IF;
        SELECT * INTO policy FROM sisy_policy_v1(task.options, task.allow_overlap, p_default_grace);
        late_by := now_ - coalesce((run.details ->> 'due_at')::timestamptz, run.scheduled_for);
        IF policy.overlap IN ('skip', 'buffer_one') THEN
            -- Serialise starts of this task so two workers cannot both see
            -- "nothing running" (the key space is sisy's own: 0x5153).
            PERFORM pg_advisory_xact_lock(20819, (run.task_id % 2147483647)::integer);
            SELECT o.id, o.scheduled_for INTO other_id, other_for
              FROM sisy_taskrun AS o
             WHERE o.task_id = run.task_id AND o.status = 'running' AND o.id <> run.id
               AND sisy_run_alive_v1(o.job_id, o.details, p_stalled_after)
             ORDER BY o.scheduled_for DESC
             LIMIT 1;
        END IF;

        IF policy.missed <> 'all' AND late_by > policy.grace
           -- A retry continues a run that started in time: it runs when a
           -- worker fetches it (procrastinate's next poll at worst). A
           -- backfill runs past instants on purpose, one after the other.
           AND NOT run.details ?| ARRAY['attempts', 'backfill']
        THEN
            UPDATE sisy_taskrun AS r
               SET status = 'missed', finished_at = now_, worker = p_worker,
                   job_id = coalesce(r.job_id, p_job_id),
                   error = format(
                       'missed: reached a worker %s s after it was due, later than the '
                       'task''s grace of %s s; not run late',
                       round(extract(epoch FROM late_by)::numeric, 3),
                       extract(epoch FROM policy.grace)::float8
                   ),
                   details = r.details || jsonb_build_object(
                       'reason', 'late', 'late_by', extract(epoch FROM late_by)::float8
                   )
             WHERE r.id = run.id;
        ELSIF other_id IS NOT NULL THEN
            UPDATE sisy_taskrun AS r
               SET status = 'skipped', finished_at = now_, worker = p_worker,
                   job_id = coalesce(r.job_id, p_job_id),
                   error = format(
                       'overlap: run %s (for %s) is still running and the task does not '
                       'allow overlap', other_id, other_for
                   ),
                   details = r.details || jsonb_build_object(
                       'reason', 'overlap', 'overlapped_run', other_id
                   )
             WHERE r.id = run.id;
        ELSE
            UPDATE sisy_taskrun AS r
               SET status = 'running', started_at = now_, finished_at = NULL, worker = p_worker,
                   job_id = coalesce(r.job_id, p_job_id),
                   details = r.details
                       || jsonb_build_object(
                              'attempt', coalesce((r.details ->> 'attempt')::integer, 0) + 1
                          )
                       || CASE WHEN policy.timeout IS NULL THEN '{}'::jsonb
                          ELSE jsonb_build_object(
                              'deadline', now_ + make_interval(secs => policy.timeout)
                          ) END
             WHERE r.id = run.id;
            started_now := true;
            IF policy.timeout IS NOT NULL THEN
                -- The planners time runs out: wake them to note this deadline.
                PERFORM pg_notify('sisy_task_changed', '');
            END IF;
        END IF;
    END IF;
    RETURN QUERY
        SELECT CASE WHEN r.status = 'running' AND NOT started_now
                         -- the same job asking again (a reply lost) may run it
                         AND (p_job_id IS NULL OR r.job_id IS DISTINCT FROM p_job_id)
                    THEN 'started_elsewhere' ELSE r.status END::varchar,
               r.task_id, r.scheduled_for, (r.details ->> 'attempt')::integer,
               r.started_at, NULL::float8
          FROM sisy_taskrun AS r WHERE r.id = p_run_id;
END;
$$;
COMMENT ON FUNCTION sisy_start_run_v1(bigint, bigint, text, interval, interval) IS
    'internal: called by the runner (start_runs). Starts run p_run_id under job p_job_id on '
    'worker p_worker, or says why not (early, busy, missed, skipped, broken, '
    'started_elsewhere). Returns the run''s status afterwards, its attempt, when it started and '
    'the seconds to wait.';

-- Defers the job of the run of task p_task_id buffered behind a run that is
-- no longer running (policy overlap='buffer_one'): it starts now (or at the
-- due_at of its jitter, if later), and its grace counts from then.
CREATE FUNCTION sisy_release_buffered_run_v1(p_task_id bigint, p_queue text, p_task_name text)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    buffered bigint;
    now_ timestamptz := clock_timestamp();
    start_at timestamptz;
BEGIN
    SELECT r.id, greatest(now_, (r.details ->> 'due_at')::timestamptz) INTO buffered, start_at
      FROM sisy_taskrun AS r
     WHERE r.task_id = p_task_id AND r.status = 'queued' AND r.job_id IS NULL
       AND r.details ? 'buffered_behind'
       AND NOT EXISTS (
           SELECT 1 FROM sisy_taskrun AS ahead
            WHERE ahead.id = (r.details ->> 'buffered_behind')::bigint
              AND ahead.status = 'running'
       )
     ORDER BY r.scheduled_for
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF buffered IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE sisy_taskrun AS r
       SET job_id = (
               sisy_defer_run_jobs_v1(p_queue, p_task_name, ARRAY[r.id], ARRAY[start_at], 1, NULL)
           )[1],
           details = r.details || jsonb_build_object('due_at', start_at)
     WHERE r.id = buffered;
    RETURN 1;
END;
$$;
COMMENT ON FUNCTION sisy_release_buffered_run_v1(bigint, text, text) IS
    'internal: called when a run ends. Defers the job of the run of task p_task_id buffered '
    'behind it (options.overlap buffer_one), on queue p_queue for task p_task_name.';

-- Records how a run ended. A run timed out meanwhile keeps its status; how
-- its callable ended is noted in details.returned. Releases the run buffered
-- behind it. False when the run was not running (timed out, or gone).
CREATE FUNCTION sisy_finish_run_v1(
    p_run_id bigint, p_status text, p_error text, p_traceback text,
    p_queue text, p_task_name text
)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    finished_task bigint;
BEGIN
    UPDATE sisy_taskrun AS r
       SET status = p_status, finished_at = clock_timestamp(),
           error = p_error, traceback = p_traceback
     WHERE r.id = p_run_id AND r.status = 'running'
    RETURNING r.task_id INTO finished_task;
    IF finished_task IS NULL THEN
        UPDATE sisy_taskrun AS r
           SET details = r.details || jsonb_build_object(
                   'returned', p_status, 'returned_at', clock_timestamp(),
                   'returned_error', p_error
               )
         WHERE r.id = p_run_id AND r.status = 'timed_out';
        RETURN false;
    END IF;
    PERFORM sisy_release_buffered_run_v1(finished_task, p_queue, p_task_name);
    RETURN true;
END;
$$;
COMMENT ON FUNCTION sisy_finish_run_v1(bigint, text, text, text, text, text) IS
    'internal: called by the runner (finish_run). Records how run p_run_id ended (p_status '
    'succeeded or failed, p_error, p_traceback) and releases the run buffered behind it. False '
    'when the run was not running.';

-- A failed attempt that will be retried after p_retry_in: the run waits
-- again, with a job of its own that workers fetch from the retry instant on,
-- its attempts listed in details.attempts. Returns the retry instant, or
-- NULL when the run was not running.
CREATE FUNCTION sisy_retry_run_v1(
    p_run_id bigint, p_error text, p_traceback text, p_retry_in interval,
    p_queue text, p_task_name text
)
    RETURNS timestamptz
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    retry_at timestamptz := clock_timestamp() + p_retry_in;
BEGIN
    UPDATE sisy_taskrun AS r
       SET status = 'queued', error = p_error, traceback = p_traceback,
           job_id = (
               sisy_defer_run_jobs_v1(
                   p_queue, p_task_name, ARRAY[r.id], ARRAY[retry_at], 1, retry_at
               )
           )[1],
           details = r.details || jsonb_build_object(
               'due_at', retry_at,
               'attempts', coalesce(r.details -> 'attempts', '[]'::jsonb) || jsonb_build_array(
                   jsonb_build_object(
                       'attempt', coalesce((r.details ->> 'attempt')::integer, 1),
                       'started_at', r.started_at,
                       'failed_at', clock_timestamp(),
                       'error', p_error
                   )
               )
           )
     WHERE r.id = p_run_id AND r.status = 'running'
       -- A run that enqueued its Django task is never enqueued again (the error came after).
       AND NOT r.details ? 'task_result_id';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN retry_at;
END;
$$;
COMMENT ON FUNCTION sisy_retry_run_v1(bigint, text, text, interval, text, text) IS
    'internal: called by the runner (retry_run). A failed attempt of run p_run_id, retried '
    'after p_retry_in with a job of its own. Returns the retry instant, or NULL when the run '
    'was not running.';

-- A run whose callable cannot be resolved (missing module or attribute,
-- deleted pk_override row, a path SISY_ALLOWED_CALLABLES refuses): the run
-- fails, the task is marked broken with the reason (sisy_task.error) and
-- stops firing, its other waiting runs are cancelled. A writer mends it by
-- changing the definition or clearing the error. Returns true when this call
-- broke the task (false: it already was, or the run was not running).
CREATE FUNCTION sisy_break_task_v1(p_run_id bigint, p_reason text, p_traceback text)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    broken_task bigint;
BEGIN
    UPDATE sisy_taskrun AS r
       SET status = 'failed', finished_at = clock_timestamp(),
           error = 'broken: ' || p_reason, traceback = p_traceback,
           details = r.details || '{"reason": "broken"}'::jsonb
     WHERE r.id = p_run_id AND r.status = 'running'
    RETURNING r.task_id INTO broken_task;
    IF broken_task IS NULL THEN
        RETURN false;
    END IF;
    UPDATE sisy_taskrun AS r
       SET status = 'cancelled', finished_at = clock_timestamp(),
           error = 'cancelled: the task is broken: ' || p_reason,
           details = r.details || '{"reason": "broken"}'::jsonb
     WHERE r.task_id = broken_task AND r.status = 'queued';
    UPDATE sisy_task AS t
       SET error = p_reason, next_run = NULL
     WHERE t.id = broken_task AND t.error = '';
    RETURN FOUND;
END;
$$;
COMMENT ON FUNCTION sisy_break_task_v1(bigint, text, text) IS
    'internal: called by the runner (break_task). Run p_run_id''s callable cannot be resolved: '
    'the run fails and its task is broken (sisy_task.error: p_reason). True when this call '
    'broke it.';

-- Records runs that a runner will not start because their task already holds
-- its share of the worker's callable slots (SISY_TASK_SLOTS, threads of
-- runs that timed out but never returned included): 'skipped', reason
-- fair_share, so that a hanging task cannot queue runs without end. A run no
-- longer queued is left alone. Returns the ids skipped.
CREATE FUNCTION sisy_skip_runs_over_share_v1(
    p_run_ids bigint[], p_job_id bigint, p_worker text, p_error text
)
    RETURNS SETOF bigint
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    UPDATE sisy_taskrun AS r
       SET status = 'skipped', finished_at = clock_timestamp(), worker = p_worker,
           job_id = coalesce(r.job_id, p_job_id), error = p_error,
           details = r.details || jsonb_build_object('reason', 'fair_share')
     WHERE r.id = ANY (p_run_ids) AND r.status = 'queued'
    RETURNING r.id;
$$;
COMMENT ON FUNCTION sisy_skip_runs_over_share_v1(bigint[], bigint, text, text) IS
    'internal: called by the runner (skip_runs_over_share). Records runs p_run_ids not started '
    'because their task holds its share of the worker''s slots: skipped, reason fair_share. '
    'Returns their ids.';

-- Records runs whose worker stopped (SIGTERM, SIGINT) before their callable
-- returned: the worker waited SISY_SHUTDOWN_TIMEOUT for them, then exited.
-- 'failed', reason interrupted: whatever the callable did is unknown. A run
-- no longer running (timed out meanwhile) is left alone. Returns the ids.
CREATE FUNCTION sisy_interrupt_runs_v1(p_run_ids bigint[], p_error text)
    RETURNS SETOF bigint
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    UPDATE sisy_taskrun AS r
       SET status = 'failed', finished_at = clock_timestamp(), error = p_error,
           details = r.details || jsonb_build_object('reason', 'interrupted')
     WHERE r.id = ANY (p_run_ids) AND r.status = 'running'
       AND NOT r.details ? 'task_result_id'  -- its enqueue committed: it follows its task
    RETURNING r.id;
$$;
COMMENT ON FUNCTION sisy_interrupt_runs_v1(bigint[], text) IS
    'internal: called by a worker that stops (interrupt_runs). Records runs p_run_ids whose '
    'callable had not returned: failed, reason interrupted. Returns their ids.';

-- Runs past their task's timeout (details.deadline) become 'timed_out': they
-- no longer count as running for the overlap policy, and the run buffered
-- behind each is released. Their worker thread cannot be stopped; how the
-- callable eventually ended is noted by sisy_finish_run_v1.
CREATE FUNCTION sisy_time_out_runs_v1(p_queue text, p_task_name text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    timed_out_tasks bigint[];
BEGIN
    WITH timed_out AS (
        UPDATE sisy_taskrun AS r
           SET status = 'timed_out', finished_at = clock_timestamp(),
               error = format(
                   'timed out: still running %s s after it started (the task''s timeout)',
                   round(extract(epoch FROM (r.details ->> 'deadline')::timestamptz
                                            - r.started_at)::numeric, 3)
               ),
               details = r.details || '{"reason": "timed_out"}'::jsonb
         WHERE r.status = 'running' AND r.details ? 'deadline'
           AND (r.details ->> 'deadline')::timestamptz <= clock_timestamp()
        RETURNING r.task_id
    )
    SELECT array_agg(timed_out.task_id) INTO timed_out_tasks FROM timed_out;
    PERFORM sisy_release_buffered_run_v1(t, p_queue, p_task_name)
       FROM unnest(coalesce(timed_out_tasks, '{}')) AS t;
    RETURN coalesce(cardinality(timed_out_tasks), 0);
END;
$$;
COMMENT ON FUNCTION sisy_time_out_runs_v1(text, text) IS
    'internal: called by the planner and the runners (time_out_runs). Runs past their task''s '
    'timeout become timed_out, and the runs buffered behind them are released. Returns how '
    'many.';

-- Django tasks (django.tasks) as what a schedule runs ------------------------------
-- A run of a schedule whose callable is a Django task enqueues it (sisy_pg/task_targets.py)
-- and then follows the task's result: the run stays 'running' until the framework's
-- task_finished signal reports the result's end (sisy_pg/task_results.py), or the task's
-- timeout closes it.

-- Records that run p_run_id enqueued its Django task as result p_task_result_id on backend
-- alias p_backend (p_task_job_id: the procrastinate job of sisy-pg's own backend, which the
-- housekeeping watches; NULL for other backends). Called in the enqueue's transaction where
-- the backend writes to this database, so that the enqueue and this record commit together.
-- False when the run is no longer running (closed meanwhile): the caller then rolls the
-- enqueue back.
CREATE FUNCTION sisy_task_enqueued_v1(
    p_run_id bigint, p_task_result_id text, p_backend text, p_task_job_id bigint
)
    RETURNS boolean
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    WITH recorded AS (
        UPDATE sisy_taskrun AS r
           SET details = r.details || jsonb_strip_nulls(jsonb_build_object(
                   'task_result_id', p_task_result_id, 'task_backend', p_backend,
                   'task_job_id', p_task_job_id, 'enqueued_at', clock_timestamp()
               ))
         WHERE r.id = p_run_id AND r.status = 'running'
           AND NOT r.details ? 'task_result_id'  -- enqueued once, whatever happens after
        RETURNING r.id
    )
    SELECT EXISTS (SELECT FROM recorded);
$$;
COMMENT ON FUNCTION sisy_task_enqueued_v1(bigint, text, text, bigint) IS
    'internal: called by the runner of a schedule of a Django task. Records that run p_run_id '
    'enqueued its task as result p_task_result_id on backend p_backend. False when the run is '
    'no longer running (the enqueue is then rolled back).';

-- The run that enqueued result p_task_result_id on backend p_backend (an index lookup).
CREATE INDEX sisy_taskrun_task_result_idx
    ON sisy_taskrun ((details ->> 'task_result_id')) WHERE details ? 'task_result_id';

-- The task of result p_task_result_id started (p_started_at, the backend's clock): noted in
-- its run's details.task_started_at, the first attempt's (a retry starts it again). Returns the
-- run's id, or NULL when no run of a schedule enqueued that result (a task enqueued by other
-- code) or its start is noted already.
CREATE FUNCTION sisy_task_result_started_v1(
    p_task_result_id text, p_backend text, p_started_at timestamptz
)
    RETURNS bigint
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    UPDATE sisy_taskrun AS r
       SET details = r.details || jsonb_build_object(
               'task_started_at', coalesce(p_started_at, clock_timestamp())
           )
     WHERE (r.details ->> 'task_result_id') = p_task_result_id
       AND r.details ? 'task_result_id'
       AND (r.details ->> 'task_backend') = p_backend
       AND NOT r.details ? 'task_started_at'
    RETURNING r.id;
$$;
COMMENT ON FUNCTION sisy_task_result_started_v1(text, text, timestamptz) IS
    'internal: called on Django''s task_started signal. Notes in its run that the task of '
    'result p_task_result_id started at p_started_at. Returns the run''s id, or NULL.';

-- The task of result p_task_result_id finished: its run ends with p_status ('succeeded' or
-- 'failed'), as sisy_finish_run_v1 ends a run whose callable returned (a run already timed
-- out notes it in details.returned). Returns the run's id, or NULL when no run of a schedule
-- enqueued that result.
CREATE FUNCTION sisy_task_result_finished_v1(
    p_task_result_id text, p_backend text, p_status text, p_error text, p_traceback text,
    p_queue text, p_task_name text
)
    RETURNS bigint
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    run_id bigint;
BEGIN
    SELECT r.id INTO run_id
      FROM sisy_taskrun AS r
     WHERE (r.details ->> 'task_result_id') = p_task_result_id
       AND r.details ? 'task_result_id'
       AND (r.details ->> 'task_backend') = p_backend;
    IF run_id IS NOT NULL THEN
        PERFORM sisy_finish_run_v1(run_id, p_status, p_error, p_traceback, p_queue, p_task_name);
    END IF;
    RETURN run_id;
END;
$$;
COMMENT ON FUNCTION sisy_task_result_finished_v1(text, text, text, text, text, text, text) IS
    'internal: called on Django''s task_finished signal. Ends the run that enqueued result '
    'p_task_result_id with p_status (succeeded or failed). Returns the run''s id, or NULL.';

-- Housekeeping --------------------------------------------------------------------

-- Housekeeping is done by one planner of the cluster per period: true for
-- the one that claims this period.
CREATE FUNCTION sisy_housekeeping_due_v1(p_every interval) RETURNS boolean
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    WITH claimed AS (
        UPDATE sisy_housekeeping SET last_at = clock_timestamp()
         WHERE last_at <= clock_timestamp() - p_every
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM claimed);
$$;
COMMENT ON FUNCTION sisy_housekeeping_due_v1(interval) IS
    'internal: called by the planner (housekeeping_due). True for the one planner of the '
    'cluster that does the housekeeping of this period of p_every.';

-- Closes the runs that can no longer happen: a run left 'running' by a
-- worker that died (its job is no longer executed by a live worker), and a
-- run still 'queued' whose job ended, vanished or lost its worker before the
-- run began (a runner error before sisy_start_run_v1, a killed worker). Then
-- releases the runs buffered behind runs that ended.
CREATE FUNCTION sisy_fail_orphaned_runs_v1(
    p_stalled_after interval, p_queue text, p_task_name text
)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    closed integer;
BEGIN
    WITH orphaned AS (
        UPDATE sisy_taskrun AS r
           SET status = 'failed', finished_at = clock_timestamp(),
               error = CASE
                   WHEN r.status = 'running' AND r.details ? 'task_result_id' THEN
                       'worker lost: the job of its Django task ended, vanished or lost its '
                       'worker without reporting the task''s result'
                   WHEN r.status = 'running' THEN
                       'worker lost: the worker running this run stopped without reporting'
                   ELSE
                       'not started: its job ended, vanished or lost its worker before the run began'
               END,
               details = r.details || jsonb_build_object(
                   'reason', CASE r.status WHEN 'running' THEN 'worker_lost' ELSE 'not_started' END
               )
         WHERE r.status IN ('queued', 'running')
           AND CASE r.status
                   WHEN 'running' THEN
                       (r.job_id IS NOT NULL OR r.details ? 'task_job_id')
                       AND NOT sisy_run_alive_v1(r.job_id, r.details, p_stalled_after)
                   ELSE
                       -- Held on purpose, without a job: buffered, waiting
                       -- for its jitter, or for its turn in a backfill.
                       CASE WHEN r.job_id IS NULL
                            THEN NOT r.details ?| ARRAY['buffered_behind', 'jitter', 'backfill']
                            ELSE NOT sisy_job_pending_v1(r.job_id, p_stalled_after) END
               END
        RETURNING r.id
    )
    SELECT count(*)::integer INTO closed FROM orphaned;
    PERFORM sisy_release_buffered_run_v1(buffered.task_id, p_queue, p_task_name)
       FROM (
           SELECT DISTINCT r.task_id FROM sisy_taskrun AS r
            WHERE r.status = 'queued' AND r.job_id IS NULL
       ) AS buffered;
    RETURN closed;
END;
$$;
COMMENT ON FUNCTION sisy_fail_orphaned_runs_v1(interval, text, text) IS
    'internal: called by the housekeeping (fail_orphaned_runs). Closes the runs that can no '
    'longer happen: their worker died or their job ended, vanished or lost its worker. Returns '
    'how many.';

-- Retention: deletes up to p_limit runs that finished longer than p_retention
-- ago, and the procrastinate jobs that ran them, oldest first.
CREATE FUNCTION sisy_prune_runs_v1(p_retention interval, p_limit integer) RETURNS integer
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    pruned_jobs bigint[];
    pruned integer;
BEGIN
    WITH old AS (
        SELECT r.id FROM sisy_taskrun AS r
         WHERE r.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled')
           AND r.finished_at < now() - p_retention
         ORDER BY r.finished_at
         LIMIT p_limit
    ), deleted AS (
        DELETE FROM sisy_taskrun AS r USING old WHERE r.id = old.id
        RETURNING r.job_id, (r.details ->> 'task_job_id')::bigint AS task_job_id
    )
    -- Its job, and the job of the Django task it enqueued (with its result).
    SELECT array_agg(job_id) FILTER (WHERE job_id IS NOT NULL)
           || coalesce(array_agg(task_job_id) FILTER (WHERE task_job_id IS NOT NULL), '{}'),
           count(*)
      INTO pruned_jobs, pruned
      FROM deleted;
    PERFORM sisy_delete_finished_jobs_v1(coalesce(pruned_jobs, '{}'));
    -- The backfills asked as long ago, once their runs are done.
    PERFORM sisy_prune_backfills_v1(p_retention);
    RETURN pruned;
END;
$$;
COMMENT ON FUNCTION sisy_prune_runs_v1(interval, integer) IS
    'internal: called by the housekeeping (prune_runs, SISY_RUN_RETENTION_DAYS). Deletes up to '
    'p_limit runs finished more than p_retention ago, and their jobs. Returns how many.';

-- Load ---------------------------------------------------------------------------------

-- What the cluster got through in the last p_window, and how far behind it
-- is now: read by the planner that does the housekeeping (its overload
-- warning, sisy_pg/planner.py) and by health.
--   due              instants dealt with: history rows finished in the window
--                    (a 'missed' row stands for its whole range: counted once);
--   executed         those whose callable ran (succeeded, failed, timed_out);
--   not_run          those not run for want of capacity: details.reason
--                    coalesced, missed, late or backlog (fair_share is a
--                    hanging task's doing, not load; nor is a
--                    paused task's, nor an overlap its policy skips);
--   overdue_tasks    enabled tasks whose next_run is more than 1 s past;
--   max_lag_seconds  how far past the earliest next_run is (0 when none is).
-- Both reads are index ranges (sisy_taskrun_finished_idx, sisy_task_due_idx):
-- the cost follows what finished recently and what is overdue, not the size
-- of the tables. PL/pgSQL, so that the clock, read once, and p_window are
-- values when the query is planned: a LANGUAGE sql function is planned
-- generic, and would guess a third of the history within the window (a
-- parallel scan, then a sequential one as the history grows).
CREATE FUNCTION sisy_load_v1(p_window interval)
    RETURNS TABLE (
        window_seconds float8, due integer, executed integer, not_run integer,
        overdue_tasks integer, max_lag_seconds float8
    )
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    measured_at timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH finished AS (
        SELECT count(*)::integer AS n_due,
               count(*) FILTER (
                   WHERE r.status IN ('succeeded', 'failed', 'timed_out')
               )::integer AS n_executed,
               count(*) FILTER (
                   WHERE r.details ->> 'reason'
                         IN ('coalesced', 'missed', 'late', 'backlog')
               )::integer AS n_not_run
          FROM sisy_taskrun AS r
         WHERE r.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled')
           AND r.finished_at >= measured_at - p_window
    ), overdue AS (
        SELECT count(*)::integer AS n_tasks
          FROM sisy_task AS t
         WHERE t.enabled AND t.next_run IS NOT NULL
           AND t.next_run < measured_at - interval '1 second'
    ), earliest AS (
        SELECT min(t.next_run) AS next_run
          FROM sisy_task AS t
         WHERE t.enabled AND t.next_run IS NOT NULL
    )
    SELECT extract(epoch FROM p_window)::float8,
           finished.n_due, finished.n_executed, finished.n_not_run, overdue.n_tasks,
           greatest(coalesce(extract(epoch FROM measured_at - earliest.next_run), 0), 0)::float8
      FROM finished, overdue, earliest;
END;
$$;
COMMENT ON FUNCTION sisy_load_v1(interval) IS
    'internal: called by the planner''s overload warning and by sisy_health_v1. What the '
    'cluster got through in the last p_window (instants due, executed, not run) and how far '
    'behind it is (overdue tasks, the largest lag).';

-- One decision point: a task's state, and what may be done to it ---------------------
-- Every edge -- the Python API, the admin, manage.py sisy, psql -- asks these
-- functions, so that they cannot disagree; Python only words the answers
-- (sisy_pg/vocabulary.py spells the same states and refusals; a test keeps
-- them equal).

-- A task's state, in this order of precedence: broken (error says why),
-- finished, paused, running (a run executes now), failing (its latest
-- outcome failed or timed out), unplanned (enabled, but no planner has given
-- it a next run), scheduled.
CREATE FUNCTION sisy_task_state_v1(
    p_error text, p_finished_at timestamptz, p_enabled boolean, p_next_run timestamptz,
    p_running boolean, p_last_status text
)
    RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path FROM CURRENT
AS $$
    SELECT CASE
        WHEN p_error <> '' THEN 'broken'
        WHEN p_finished_at IS NOT NULL THEN 'finished'
        WHEN NOT p_enabled THEN 'paused'
        WHEN p_running THEN 'running'
        WHEN p_last_status IN ('failed', 'timed_out') THEN 'failing'
        WHEN p_next_run IS NULL THEN 'unplanned'
        ELSE 'scheduled'
    END;
$$;
COMMENT ON FUNCTION sisy_task_state_v1(
    text, timestamptz, boolean, timestamptz, boolean, text
) IS
    'internal: called by the view sisy_task_status, the Python API, the admin and manage.py '
    'sisy. A task''s state from its row''s values: broken, finished, paused, running, failing, '
    'unplanned or scheduled.';

-- Why action p_action (run_now, pause, resume, clear_error) may not be done
-- to a task whose row holds these values, or NULL when it may.
CREATE FUNCTION sisy_refusal_v1(
    p_action text, p_enabled boolean, p_finished_at timestamptz, p_error text
)
    RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path FROM CURRENT
AS $$
BEGIN
    CASE p_action
        WHEN 'run_now' THEN
            RETURN CASE WHEN p_error <> '' THEN 'broken'
                        WHEN p_finished_at IS NOT NULL THEN 'finished'
                        WHEN NOT p_enabled THEN 'paused' END;
        WHEN 'pause' THEN
            RETURN CASE WHEN p_finished_at IS NOT NULL THEN 'finished'
                        WHEN NOT p_enabled THEN 'already_paused' END;
        WHEN 'resume' THEN
            -- Resuming a paused task also clears its error (the trigger: a
            -- change of enabled re-plans it); an enabled broken task is
            -- mended by clear_error.
            RETURN CASE WHEN p_finished_at IS NOT NULL THEN 'finished'
                        WHEN p_enabled AND p_error <> '' THEN 'broken'
                        WHEN p_enabled THEN 'not_paused' END;
        WHEN 'clear_error' THEN
            RETURN CASE WHEN p_error = '' THEN 'not_broken' END;
        ELSE
            RAISE EXCEPTION 'sisy: unknown action %', p_action
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'One of run_now, pause, resume, clear_error.';
    END CASE;
END;
$$;
COMMENT ON FUNCTION sisy_refusal_v1(text, boolean, timestamptz, text) IS
    'internal: called by sisy_act_v1 and the Python API. Why action p_action (run_now, pause, '
    'resume, clear_error) may not be done to a task whose row holds these values, or NULL.';

-- Does action p_action to the tasks p_task_ids, each unless sisy_refusal_v1
-- refuses it, deciding on each row as it is once locked. One row per task
-- found: done, or the refusal. What each action writes:
--   run_now      next_run = the clock: the planners fire what is due, once, then
--                as scheduled;
--   pause        enabled = false: the triggers cancel its queued runs;
--   resume       enabled = true: the planners plan it again at once (its
--                error, if any, is cleared by the trigger);
--   clear_error  error = '': the planners plan it again; its next run tries
--                the callable again.
CREATE FUNCTION sisy_act_v1(p_action text, p_task_ids bigint[])
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM sisy_refusal_v1(p_action, true, NULL, '');  -- an unknown action raises
    RETURN QUERY
    WITH target AS (
        SELECT t.id, t.label,
               sisy_refusal_v1(p_action, t.enabled, t.finished_at, t.error) AS refusal
          FROM sisy_task AS t
         WHERE t.id = ANY (p_task_ids)
         ORDER BY t.id
           FOR NO KEY UPDATE
    ), acted AS (
        UPDATE sisy_task AS t
           SET enabled = CASE p_action WHEN 'pause' THEN false
                                       WHEN 'resume' THEN true
                                       ELSE t.enabled END,
               next_run = CASE WHEN p_action = 'run_now' THEN clock_timestamp()
                               ELSE t.next_run END,
               error = CASE WHEN p_action = 'clear_error' THEN '' ELSE t.error END
          FROM target
         WHERE t.id = target.id AND target.refusal IS NULL
        RETURNING t.id
    )
    SELECT target.id, target.label, target.refusal IS NULL, target.refusal
      FROM target
     ORDER BY target.id;
END;
$$;
COMMENT ON FUNCTION sisy_act_v1(text, bigint[]) IS
    'internal: the decision point the Python API, the admin and manage.py sisy call (the '
    'tables'' owner may call it at psql, for several tasks at once). Does action p_action '
    '(run_now, pause, resume, clear_error) to tasks p_task_ids, each unless refused. One row '
    'per task: task_id, label, done, refusal.';

-- For operators at psql ------------------------------------------------------------
-- Operators call them by their unversioned names (sisy_run_now..., in the
-- section "The operators' names", at the end).

-- The id of the task p_task names: its label or, when no task has that
-- label, its id. Raises no_data_found when there is none, so that a typo is
-- not mistaken for "nothing to do".
CREATE FUNCTION sisy_task_id_v1(p_task text) RETURNS bigint
    LANGUAGE plpgsql STABLE
    SET search_path FROM CURRENT
AS $$
DECLARE
    found_id bigint;
BEGIN
    SELECT t.id INTO found_id FROM sisy_task AS t WHERE t.label = p_task;
    IF found_id IS NULL AND p_task ~ '^[0-9]{1,18}$' THEN
        SELECT t.id INTO found_id FROM sisy_task AS t WHERE t.id = p_task::bigint;
    END IF;
    IF found_id IS NULL THEN
        RAISE EXCEPTION 'sisy: no task labelled % (nor with that id)', quote_literal(p_task)
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN found_id;
END;
$$;
COMMENT ON FUNCTION sisy_task_id_v1(text) IS
    'internal: called by the operators'' functions and manage.py sisy. The id of the task '
    'p_task names: its label or, when no task has that label, its id. Raises no_data_found when '
    'there is none.';

-- What manage.py sisy run/pause/resume/clear-error do, for a session without
-- Django (docs/sql.md): the task named p_task (a label, or an id), done or
-- refused with the reason. SECURITY DEFINER: the operator role may call them
-- without any right on the tables (sql/roles.sql).
CREATE FUNCTION sisy_run_now_v1(p_task text)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_act_v1('run_now', ARRAY[sisy_task_id_v1(p_task)]);
$$;
COMMENT ON FUNCTION sisy_run_now_v1(text) IS
    'Runs a task once, now, then as scheduled (version 1 of sisy_run_now). p_task: its label, '
    'or its id. Returns one row: task_id, label, done, refusal. Operators call sisy_run_now, '
    'which calls the current version.';

CREATE FUNCTION sisy_pause_v1(p_task text)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_act_v1('pause', ARRAY[sisy_task_id_v1(p_task)]);
$$;
COMMENT ON FUNCTION sisy_pause_v1(text) IS
    'Pauses a task, without a note or an end (version 1 of sisy_pause). p_task: its label, or '
    'its id. Returns one row: task_id, label, done, refusal. Operators call sisy_pause, which '
    'calls the current version.';

CREATE FUNCTION sisy_resume_v1(p_task text)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_act_v1('resume', ARRAY[sisy_task_id_v1(p_task)]);
$$;
COMMENT ON FUNCTION sisy_resume_v1(text) IS
    'Resumes a paused task (version 1 of sisy_resume). p_task: its label, or its id. Returns '
    'one row: task_id, label, done, refusal. Operators call sisy_resume, which calls the '
    'current version.';

CREATE FUNCTION sisy_clear_error_v1(p_task text)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_act_v1('clear_error', ARRAY[sisy_task_id_v1(p_task)]);
$$;
COMMENT ON FUNCTION sisy_clear_error_v1(text) IS
    'Clears the error of a broken task (version 1 of sisy_clear_error). p_task: its label, or '
    'its id. Returns one row: task_id, label, done, refusal. Operators call sisy_clear_error, '
    'which calls the current version.';

-- Views for people with psql ----------------------------------------------------------

-- One row per task: its state (sisy_task_state_v1), why it is broken, and its
-- latest outcome.
CREATE VIEW sisy_task_status AS
SELECT t.id, t.label, t.schedule, t.timezone, t.enabled,
       sisy_task_state_v1(
           t.error, t.finished_at, t.enabled, t.next_run, running.id IS NOT NULL, last.status
       ) AS state,
       t.error,
       t.next_run, t.last_run, t.fire_count, t.iterations, t.finished_at,
       running.id IS NOT NULL AS running,
       last.status AS last_status,
       last.started_at AS last_started_at,
       last.finished_at AS last_finished_at,
       last.error AS last_error,
       -- A pause's note and end (sisy_task_pause, docs/pausing.md).
       pause.note AS pause_note,
       pause.until AS paused_until,
       pause.paused_at,
       pause.paused_by
  FROM sisy_task AS t
  LEFT JOIN LATERAL (
      SELECT r.id FROM sisy_taskrun AS r
       WHERE r.task_id = t.id AND r.status = 'running'
       LIMIT 1
  ) AS running ON true
  LEFT JOIN LATERAL (
      SELECT r.status, r.started_at, r.finished_at, r.error
        FROM sisy_taskrun AS r
       WHERE r.task_id = t.id
         AND r.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled')
       ORDER BY r.scheduled_for DESC
       LIMIT 1
  ) AS last ON true
  LEFT JOIN sisy_task_pause AS pause ON pause.task_id = t.id AND NOT t.enabled;
COMMENT ON VIEW sisy_task_status IS
    'One row per task: its state (broken, finished, paused, running, failing, unplanned, '
    'scheduled), why it is broken (error), its next and last runs, its latest outcome '
    '(last_status, last_error...) and its pause (pause_note, paused_until, paused_at, '
    'paused_by). No userdata nor callable: the operator and monitor roles read it. docs/sql.md';

-- One row per run or recorded decision not to run, with why (reason: late,
-- missed, coalesced, overlap, backlog, broken, timed_out, worker_lost,
-- not_started, disabled), which attempt ran last, the delay its task's jitter
-- gave its start (seconds) and whether a backfill asked for it.
CREATE VIEW sisy_run_history AS
SELECT r.id, r.task_id, t.label, r.scheduled_for, r.status,
       r.details ->> 'reason' AS reason,
       r.started_at - r.scheduled_for AS lag,
       r.finished_at - r.started_at AS duration,
       (r.details ->> 'attempt')::integer AS attempt,
       r.queued_at, r.started_at, r.finished_at, r.worker, r.job_id, r.error,
       -- A run of a Django task: the TaskResult it enqueued, and on which backend.
       r.details ->> 'task_result_id' AS task_result_id,
       r.details ->> 'task_backend' AS task_backend,
       (r.details ->> 'jitter')::float8 AS jitter,
       r.details ? 'backfill' AS backfill
  FROM sisy_taskrun AS r
  JOIN sisy_task AS t ON t.id = r.task_id;
COMMENT ON VIEW sisy_run_history IS
    'One row per run, or per decision not to run: its task''s label, its instant '
    '(scheduled_for), status and reason (docs/reliability.md), lag, duration, attempt, worker, '
    'error, jitter, and whether a backfill asked for it. The operator and monitor roles read '
    'it. docs/sql.md';

-- Django tasks on procrastinate: their results ---------------------------------------------
-- sisy_pg.django_tasks.ProcrastinateBackend, a backend of Django's task framework
-- (django.tasks), runs each task as a procrastinate job. sisy_task_result
-- holds what the job runs (as its arguments say) and how it went, until
-- procrastinate stores results itself; the backend writes the job and its
-- result through the same Django connection, in the same transaction.
-- Statuses and timestamps are those of Django's TaskResult, on the
-- database's clock.

-- One row per job of a Django task, deleted with its job (see the next
-- section). No model maps it.
CREATE TABLE sisy_task_result (
    job_id bigint PRIMARY KEY,
    -- The job's arguments: the task's dotted path, backend alias, args,
    -- kwargs, retries and run_after (sisy_pg/django_tasks/job_args.py).
    task jsonb NOT NULL
        CONSTRAINT sisy_task_result_task_is_object CHECK (jsonb_typeof(task) = 'object'),
    queue_name text NOT NULL,
    priority integer NOT NULL,
    status text NOT NULL DEFAULT 'READY'
        CONSTRAINT sisy_task_result_status_known
            CHECK (status IN ('READY', 'RUNNING', 'FAILED', 'SUCCESSFUL')),
    enqueued_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    started_at timestamp with time zone NULL,  -- its first attempt
    last_attempted_at timestamp with time zone NULL,
    finished_at timestamp with time zone NULL,  -- once SUCCESSFUL or FAILED
    worker_ids text[] NOT NULL DEFAULT '{}',  -- the procrastinate worker of each attempt
    return_value jsonb NULL,
    -- One {"exception_class_path": ..., "traceback": ...} per failed attempt.
    errors jsonb NOT NULL DEFAULT '[]'::jsonb
        CONSTRAINT sisy_task_result_errors_is_array CHECK (jsonb_typeof(errors) = 'array')
);

-- The result of job p_job_id, just deferred in this transaction with
-- arguments p_task, on queue p_queue_name at priority p_priority: READY.
-- Returns when it was enqueued.
CREATE FUNCTION sisy_task_result_enqueued_v1(
    p_job_id bigint, p_task jsonb, p_queue_name text, p_priority integer
)
    RETURNS timestamptz
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    INSERT INTO sisy_task_result AS res (job_id, task, queue_name, priority)
    VALUES (p_job_id, p_task, p_queue_name, p_priority)
    RETURNING res.enqueued_at;
$$;
COMMENT ON FUNCTION sisy_task_result_enqueued_v1(bigint, jsonb, text, integer) IS
    'internal: called by sisy_pg.django_tasks.ProcrastinateBackend. Records the result of job '
    'p_job_id, just deferred (READY). Returns when it was enqueued.';

-- An attempt of job p_job_id starts on worker p_worker_id: RUNNING, its
-- worker listed. A job deferred without a result (not by the backend) gets
-- one now, from the job's arguments, queue and priority (p_task...).
-- Returns the result as it is now; no row when it already succeeded (the
-- job run again: its worker died before procrastinate recorded its end),
-- so that a task that succeeded is not run twice. A FAILED one may run
-- again (a job retried by hand).
CREATE FUNCTION sisy_task_result_start_v1(
    p_job_id bigint, p_worker_id text, p_task jsonb, p_queue_name text, p_priority integer
)
    RETURNS TABLE (
        enqueued_at timestamptz, started_at timestamptz, last_attempted_at timestamptz,
        worker_ids text[], errors jsonb
    )
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    INSERT INTO sisy_task_result AS res
           (job_id, task, queue_name, priority, status, started_at, last_attempted_at, worker_ids)
    VALUES (p_job_id, p_task, p_queue_name, p_priority, 'RUNNING', clock_timestamp(),
            clock_timestamp(), ARRAY[p_worker_id])
    ON CONFLICT (job_id) DO UPDATE
       SET status = 'RUNNING',
           started_at = coalesce(res.started_at, excluded.started_at),
           last_attempted_at = excluded.last_attempted_at,
           finished_at = NULL,
           worker_ids = res.worker_ids || excluded.worker_ids
     WHERE res.status <> 'SUCCESSFUL'
    RETURNING res.enqueued_at, res.started_at, res.last_attempted_at, res.worker_ids, res.errors;
$$;
COMMENT ON FUNCTION sisy_task_result_start_v1(bigint, text, jsonb, text, integer) IS
    'internal: called by the worker running a job of the Django tasks backend. An attempt of '
    'job p_job_id starts (RUNNING). Returns the result, or no row when it already succeeded.';

-- An attempt of job p_job_id ended: p_status SUCCESSFUL (with p_return_value)
-- or FAILED, or READY again for a failed attempt that procrastinate retries.
-- p_error, if not NULL, is added to the errors. Returns when it finished
-- (NULL: READY), or no row when the result is gone (its job deleted).
CREATE FUNCTION sisy_task_result_finish_v1(
    p_job_id bigint, p_status text, p_return_value jsonb, p_error jsonb
)
    RETURNS timestamptz
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    UPDATE sisy_task_result AS res
       SET status = p_status,
           finished_at = CASE WHEN p_status IN ('SUCCESSFUL', 'FAILED') THEN clock_timestamp() END,
           return_value = p_return_value,
           errors = CASE WHEN p_error IS NULL THEN res.errors
                         ELSE res.errors || jsonb_build_array(p_error) END
     WHERE res.job_id = p_job_id
    RETURNING res.finished_at;
$$;
COMMENT ON FUNCTION sisy_task_result_finish_v1(bigint, text, jsonb, jsonb) IS
    'internal: called by the worker running a job of the Django tasks backend. An attempt of '
    'job p_job_id ended: p_status SUCCESSFUL, FAILED, or READY for a retry. Returns when it '
    'finished.';

-- The result of job p_job_id; no row when there is none. A result still
-- READY or RUNNING whose job can no longer run (sisy_job_pending_v1: it
-- ended without reporting, was cancelled, or its worker died -- no
-- heartbeat for p_stalled_after) is FAILED.
CREATE FUNCTION sisy_task_result_v1(p_job_id bigint, p_stalled_after interval)
    RETURNS TABLE (
        task jsonb, queue_name text, priority integer, status text, enqueued_at timestamptz,
        started_at timestamptz, last_attempted_at timestamptz, finished_at timestamptz,
        worker_ids text[], return_value jsonb, errors jsonb
    )
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT res.task, res.queue_name, res.priority,
           CASE
               WHEN res.status IN ('READY', 'RUNNING')
                    AND NOT sisy_job_pending_v1(res.job_id, p_stalled_after) THEN 'FAILED'
               ELSE res.status
           END,
           res.enqueued_at, res.started_at, res.last_attempted_at, res.finished_at,
           res.worker_ids, res.return_value, res.errors
      FROM sisy_task_result AS res
     WHERE res.job_id = p_job_id;
$$;
COMMENT ON FUNCTION sisy_task_result_v1(bigint, interval) IS
    'internal: called by the Django tasks backend (get_result). The result of job p_job_id, '
    'FAILED if its job can no longer run; no row when there is none.';

-- The seam to procrastinate (continued): Django tasks' results -----------------------------
-- A result lives as long as its job: deleted with it (procrastinate's
-- retention, or a worker run with --delete-jobs).
ALTER TABLE sisy_task_result
    ADD CONSTRAINT sisy_task_result_job_fk
    FOREIGN KEY (job_id) REFERENCES procrastinate_jobs (id) ON DELETE CASCADE;

-- Metrics ---------------------------------------------------------------------------------
-- What Prometheus reads (sisy_pg/metrics.py, docs/metrics.md), kept by the database so
-- that the runs of every worker count, whoever scrapes. A run that reaches a final status
-- (or is inserted final) appends one row to sisy_metric_delta, by a trigger: an insert into
-- a table without an index, so the statements that finish runs never wait on one another
-- (no counter row that every worker updates). A scrape (sisy_metrics_v1) folds the rows
-- appended since the last one into sisy_metric_total and reads the totals: it costs what
-- changed, not the size of the history. Nothing lowers a total: retention and deleted
-- tasks delete runs, not what they counted.

-- The upper bounds (seconds) of the histograms' buckets, +Infinity last: a run's lag (its
-- first attempt's start - its instant) and its duration (the last attempt's end - its
-- start). The totals are kept per bound: other bounds would be a new _vN.
CREATE FUNCTION sisy_metric_buckets_v1(p_metric text) RETURNS float8[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path FROM CURRENT
AS $$
    SELECT CASE p_metric
        WHEN 'lag' THEN
            '{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, Infinity}'
        WHEN 'duration' THEN
            '{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, Infinity}'
    END::float8[];
$$;
COMMENT ON FUNCTION sisy_metric_buckets_v1(text) IS
    'internal: called by the metrics'' trigger and sisy_metrics_v1. The upper bounds, in '
    'seconds, of the buckets of histogram p_metric (lag, duration), +Infinity last.';

-- One row per run that reached a final status, not folded yet, with the bucket (its upper
-- bound) of its lag and of its duration. No model maps it; only the trigger below writes
-- it, and only sisy_metrics_fold_v1 deletes.
CREATE TABLE sisy_metric_delta (
    id bigint GENERATED ALWAYS AS IDENTITY,
    status text NOT NULL,
    reason text NOT NULL,  -- details.reason; '' when none
    lag float8 NULL,  -- seconds: its first attempt's start - its instant (runs that started)
    lag_le float8 NULL,
    duration float8 NULL,  -- seconds: its callable's last attempt (runs that ran to an end)
    duration_le float8 NULL
);

-- The counts folded so far, by (metric, status, reason, le): metric 'runs' (by status and
-- reason; le Infinity), or a histogram, 'lag' or 'duration' (by bucket, non-cumulative;
-- status and reason ''), with the sum of the bucket's observations. No model maps it.
CREATE TABLE sisy_metric_total (
    metric text NOT NULL,
    status text NOT NULL,
    reason text NOT NULL,
    le float8 NOT NULL,
    count bigint NOT NULL,
    sum float8 NOT NULL,
    CONSTRAINT sisy_metric_total_key PRIMARY KEY (metric, status, reason, le)
);

-- Folds the rows of sisy_metric_delta into sisy_metric_total, one transaction at a time (an
-- advisory lock of sisy's key space, 0x5153, with -1, which no task id uses: a second
-- folder does not wait, it leaves the rows to the next fold). Not on a standby nor in a
-- read-only transaction (the scrape then adds the rows left to the totals). Returns the
-- rows folded. SECURITY DEFINER, as the trigger that calls it: neither workers nor
-- monitors need a right on the two tables.
CREATE FUNCTION sisy_metrics_fold_v1() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    folded integer;
BEGIN
    IF pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean
       OR NOT pg_try_advisory_xact_lock(20819, -1)
    THEN
        RETURN 0;
    END IF;
    WITH moved AS (
        DELETE FROM sisy_metric_delta AS d
        RETURNING d.status, d.reason, d.lag, d.lag_le, d.duration, d.duration_le
    ), added AS (
        INSERT INTO sisy_metric_total AS t (metric, status, reason, le, count, sum)
        SELECT o.metric, o.status, o.reason, o.le, count(*), coalesce(sum(o.value), 0)
          FROM moved AS m
          -- Each row's observations, as sisy_metrics_v1 reads the rows not folded.
          CROSS JOIN LATERAL (VALUES
              ('runs', m.status, m.reason, 'Infinity'::float8, NULL::float8),
              ('lag', '', '', m.lag_le, m.lag),
              ('duration', '', '', m.duration_le, m.duration)
          ) AS o(metric, status, reason, le, value)
         WHERE o.le IS NOT NULL
         GROUP BY o.metric, o.status, o.reason, o.le
         ORDER BY o.metric, o.status, o.reason, o.le
        ON CONFLICT ON CONSTRAINT sisy_metric_total_key DO UPDATE
           SET count = t.count + excluded.count, sum = t.sum + excluded.sum
        RETURNING 1
    )
    SELECT count(*)::integer INTO folded FROM moved;
    RETURN folded;
END;
$$;
COMMENT ON FUNCTION sisy_metrics_fold_v1() IS
    'internal: called by sisy_metrics_v1 and the trigger sisy_taskrun_metrics_v1. Folds the '
    'rows of sisy_metric_delta into sisy_metric_total. Returns how many.';

-- A run reached a final status: one row appended to sisy_metric_delta. Its lag counts from
-- its first attempt (a retried run's start is its last attempt's) to its instant plus its
-- jitter (details.jitter: a delay asked for is no lateness); a backfill run has none (it
-- runs an instant long past on purpose); a run whose worker was
-- lost has no duration (its end is when the loss was noticed). A value's bucket is the first
-- bound >= it (width_bucket finds the last bound <= it). Every 4096th row folds (once per
-- transaction at most), so that the table stays small where nobody scrapes.
CREATE FUNCTION sisy_taskrun_metrics_v1() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    run_lag float8 := CASE WHEN NOT NEW.details ? 'backfill' THEN extract(epoch FROM coalesce(
        (NEW.details -> 'attempts' -> 0 ->> 'started_at')::timestamptz, NEW.started_at
    ) - NEW.scheduled_for) - coalesce((NEW.details ->> 'jitter')::float8, 0) END;
    run_duration float8 := CASE
        WHEN NEW.status IN ('succeeded', 'failed', 'timed_out')
             AND coalesce(NEW.details ->> 'reason', '') <> 'worker_lost'
        THEN extract(epoch FROM NEW.finished_at - NEW.started_at)
    END;
    appended bigint;
BEGIN
    INSERT INTO sisy_metric_delta (status, reason, lag, lag_le, duration, duration_le)
    SELECT NEW.status, coalesce(NEW.details ->> 'reason', ''),
           run_lag, bounds.lag[below.lag + (run_lag IS DISTINCT FROM bounds.lag[below.lag])::integer],
           run_duration,
           bounds.duration[below.duration
                           + (run_duration IS DISTINCT FROM bounds.duration[below.duration])::integer]
      FROM (SELECT sisy_metric_buckets_v1('lag') AS lag,
                   sisy_metric_buckets_v1('duration') AS duration) AS bounds
     CROSS JOIN LATERAL (SELECT width_bucket(run_lag, bounds.lag) AS lag,
                                width_bucket(run_duration, bounds.duration) AS duration) AS below
    RETURNING id INTO appended;
    -- Once per transaction at most: a fold scans the table, where the rows this
    -- transaction appended and folded stay until it ends (a big UPDATE would fold again
    -- and again over them).
    IF appended % 4096 = 0 AND current_setting('sisy.metrics_folded', true) IS DISTINCT FROM 'on'
    THEN
        PERFORM set_config('sisy.metrics_folded', 'on', true);
        PERFORM sisy_metrics_fold_v1();
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_taskrun_metrics_v1() IS
    'internal: the triggers sisy_taskrun_metrics_insert_v1 and sisy_taskrun_metrics_update_v1. '
    'Counts each run that reaches a final status (its status, reason, lag and duration) in '
    'sisy_metric_delta.';

CREATE TRIGGER sisy_taskrun_metrics_insert_v1
    AFTER INSERT ON sisy_taskrun
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled'))
    EXECUTE FUNCTION sisy_taskrun_metrics_v1();

CREATE TRIGGER sisy_taskrun_metrics_update_v1
    AFTER UPDATE OF status ON sisy_taskrun
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled')
          AND OLD.status NOT IN (
              'succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled'
          ))
    EXECUTE FUNCTION sisy_taskrun_metrics_v1();

-- Everything a scrape shows, in one statement: first the fold, then one row per sample --
--   runs_total                     {status, reason}: the runs that reached that status;
--   run_lag_seconds_bucket         le: the runs that started within le of their instant
--                                  (cumulative; le Infinity is their count);
--   run_lag_seconds_sum            their lags' sum;
--   run_duration_seconds_bucket    le, and _sum: the same of the runs that ran to an end;
--   tasks                          {state}: the tasks in that state (sisy_task_state_v1),
--                                  states that have some;
--   workers                        {planning: true, false, or unknown for a worker with
--                                  no sisy report}: live workers, as sisy_health_v1 says;
--   runs_waiting, runs_running     runs queued (claimed, waiting to start, a retry
--                                  waiting for its instant, a run buffered behind another)
--                                  and running now;
--   oldest_overdue_seconds         how long ago the oldest instant due and not started
--                                  was: an enabled task's next run not claimed yet, or a
--                                  queued run past its instant (not one buffered behind
--                                  a running run); 0 when none is.
-- Reads the totals and the rows not folded, the tasks (for each, an index lookup of its
-- running run and of its latest outcome, where these decide its state), the live workers
-- and the runs queued or running: it never scans the history. PL/pgSQL, so that
-- sisy_worker need not exist when this is created. SECURITY DEFINER: the monitor role may scrape without any right on the
-- tables (sql/roles.sql).
CREATE FUNCTION sisy_metrics_v1(p_stalled_after interval DEFAULT '30 seconds')
    RETURNS TABLE (metric text, labels jsonb, le float8, value float8)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
BEGIN
    PERFORM sisy_metrics_fold_v1();
    RETURN QUERY
    WITH counted AS (
        SELECT t.metric, t.status, t.reason, t.le, t.count::float8 AS count, t.sum
          FROM sisy_metric_total AS t
        UNION ALL
        -- Rows another transaction folds now, or appended on a primary this standby follows.
        SELECT o.metric, o.status, o.reason, o.le, 1::float8, coalesce(o.value, 0)
          FROM sisy_metric_delta AS d
          CROSS JOIN LATERAL (VALUES
              ('runs', d.status, d.reason, 'Infinity'::float8, NULL::float8),
              ('lag', '', '', d.lag_le, d.lag),
              ('duration', '', '', d.duration_le, d.duration)
          ) AS o(metric, status, reason, le, value)
         WHERE o.le IS NOT NULL
    ), summed AS (
        SELECT c.metric, c.status, c.reason, c.le, sum(c.count) AS count, sum(c.sum) AS sum
          FROM counted AS c
         GROUP BY c.metric, c.status, c.reason, c.le
    ), histogram AS (
        SELECT h.name, b.le, coalesce(s.count, 0) AS count, coalesce(s.sum, 0) AS sum
          FROM (VALUES ('lag'), ('duration')) AS h(name)
          CROSS JOIN LATERAL unnest(sisy_metric_buckets_v1(h.name)) AS b(le)
          LEFT JOIN summed AS s ON s.metric = h.name AND s.le = b.le
    ), live AS (
        SELECT hb.worker_id AS id FROM sisy_worker_heartbeats_v1() AS hb
         WHERE hb.last_heartbeat > now_ - p_stalled_after
        UNION
        SELECT w.id FROM sisy_worker AS w WHERE w.seen_at > now_ - p_stalled_after
    ), facts AS (
        -- What decides each task's state. Broken, finished and paused tasks are so whatever
        -- their runs; for the others: a running run, and the latest outcome, read backwards
        -- from the task's latest run (sisy_taskrun_once_per_instant) to the first final one
        -- (written "not queued nor running", so that no plan reads the index of all the
        -- finished runs, sisy_taskrun_finished_idx, for each task).
        SELECT t.error <> '' AS broken, t.finished_at IS NOT NULL AS finished, t.enabled,
               t.next_run IS NOT NULL AS planned,
               CASE WHEN decided.by_runs THEN EXISTS (
                   SELECT FROM sisy_taskrun AS r
                    WHERE r.task_id = t.id AND r.status = 'running'
               ) ELSE false END AS running,
               CASE WHEN decided.by_runs THEN (
                   SELECT r.status FROM sisy_taskrun AS r
                    WHERE r.task_id = t.id AND r.status <> ALL ('{queued, running}')
                    ORDER BY r.scheduled_for DESC
                    LIMIT 1
               ) END AS last_status
          FROM sisy_task AS t
          CROSS JOIN LATERAL (
              SELECT t.error = '' AND t.finished_at IS NULL AND t.enabled AS by_runs
          ) AS decided
    ), states AS (
        -- sisy_task_state_v1 once per combination of facts, not once per task.
        SELECT sisy_task_state_v1(
                   CASE WHEN f.broken THEN 'broken' ELSE '' END,
                   CASE WHEN f.finished THEN now_ END,
                   f.enabled,
                   CASE WHEN f.planned THEN now_ END,
                   f.running, f.last_status
               ) AS state,
               count(*) AS tasks
          FROM facts AS f
         GROUP BY f.broken, f.finished, f.enabled, f.planned, f.running, f.last_status
    ), active AS (
        SELECT count(*) FILTER (WHERE r.status = 'queued') AS waiting,
               count(*) FILTER (WHERE r.status = 'running') AS running,
               min(coalesce((r.details ->> 'due_at')::timestamptz, r.scheduled_for))
                   FILTER (WHERE r.status = 'queued' AND NOT r.details ? 'buffered_behind'
                                 AND NOT r.details ? 'backfill')  -- past on purpose
                   AS oldest_due
          FROM sisy_taskrun AS r
         WHERE r.status IN ('queued', 'running')
    )
    SELECT 'runs_total', jsonb_build_object('status', s.status, 'reason', s.reason),
           NULL::float8, s.count
      FROM summed AS s WHERE s.metric = 'runs'
    UNION ALL
    SELECT 'run_' || h.name || '_seconds_bucket', '{}'::jsonb, h.le,
           sum(h.count) OVER (PARTITION BY h.name ORDER BY h.le)
      FROM histogram AS h
    UNION ALL
    SELECT 'run_' || h.name || '_seconds_sum', '{}'::jsonb, NULL, sum(h.sum)
      FROM histogram AS h GROUP BY h.name
    UNION ALL
    SELECT 'tasks', jsonb_build_object('state', st.state), NULL, sum(st.tasks)::float8
      FROM states AS st GROUP BY st.state
    UNION ALL
    SELECT 'workers',
           jsonb_build_object('planning', CASE w.plans WHEN true THEN 'true'
                                                       WHEN false THEN 'false'
                                                       ELSE 'unknown' END),
           NULL, count(*)::float8
      FROM live LEFT JOIN sisy_worker AS w ON w.id = live.id
     GROUP BY w.plans
    UNION ALL
    SELECT 'runs_waiting', '{}'::jsonb, NULL, a.waiting::float8 FROM active AS a
    UNION ALL
    SELECT 'runs_running', '{}'::jsonb, NULL, a.running::float8 FROM active AS a
    UNION ALL
    SELECT 'oldest_overdue_seconds', '{}'::jsonb, NULL,
           greatest(coalesce(extract(epoch FROM now_ - least(
               (SELECT min(t.next_run) FROM sisy_task AS t
                 WHERE t.enabled AND t.next_run IS NOT NULL
                   AND t.error = '' AND t.finished_at IS NULL),
               a.oldest_due
           ))::float8, 0), 0)
      FROM active AS a;
END;
$$;
COMMENT ON FUNCTION sisy_metrics_v1(interval) IS
    'The metrics of /sisy/metrics as rows (version 1 of sisy_metrics): metric, labels, le, '
    'value. p_stalled_after: a worker silent longer is not counted. Operators call '
    'sisy_metrics, which calls the current version.';

-- Pauses ---------------------------------------------------------------------------------
-- A pause may say why (a note) and when it ends (until). Both live beside the
-- task, in a table of their own (sisy_task_pause, with the tables: the columns
-- the models map are frozen, see the upgrade rule); the planners resume the task at its end, on the
-- database's clock (sisy_end_pauses_v1), and wake up for the earliest end
-- (the planner_state query). Resuming a task, by any writer, forgets its
-- pause. docs/pausing.md.

-- A task enabled again (resumed, by any writer), deleted, or truncated with
-- all the others forgets its pause, so that a later pause starts afresh and
-- an end never resumes a task paused since for another reason. SECURITY
-- DEFINER: whoever may enable or delete a task may forget its pause.
CREATE FUNCTION sisy_task_forget_pause_v1() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM sisy_task_pause WHERE task_id = NEW.id;
    ELSIF TG_OP = 'DELETE' THEN
        -- Statement level: one join however many tasks the statement deleted.
        IF EXISTS (SELECT FROM sisy_task_pause) THEN
            DELETE FROM sisy_task_pause AS p USING deleted_tasks AS d WHERE p.task_id = d.id;
        END IF;
    ELSE
        DELETE FROM sisy_task_pause;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_task_forget_pause_v1() IS
    'internal: the triggers sisy_task_resumed_forgets_pause_v1, '
    'sisy_task_deleted_forgets_pause_v1 and sisy_task_truncated_forgets_pauses_v1. A task '
    'resumed, deleted or truncated forgets its pause''s note and end.';

CREATE TRIGGER sisy_task_resumed_forgets_pause_v1
    AFTER UPDATE OF enabled ON sisy_task
    FOR EACH ROW WHEN (NEW.enabled AND NOT OLD.enabled)
    EXECUTE FUNCTION sisy_task_forget_pause_v1();

CREATE TRIGGER sisy_task_deleted_forgets_pause_v1
    AFTER DELETE ON sisy_task
    REFERENCING OLD TABLE AS deleted_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_forget_pause_v1();

CREATE TRIGGER sisy_task_truncated_forgets_pauses_v1
    AFTER TRUNCATE ON sisy_task
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_forget_pause_v1();

-- Pauses the tasks p_task_ids, each unless sisy_refusal_v1 refuses it (as
-- sisy_act_v1's pause, on each row as it is once locked), with the note
-- p_note and the end p_until (NULL: none). A task already paused gets the
-- new note and end (to say more, or to move the end); with neither, it is
-- refused already_paused as sisy_act_v1 refuses it. paused_by is the
-- writer's actor (sisy.actor: sisy_pg.audit.acting_as, the admin's user,
-- manage.py sisy --as), else the database role and application_name. An end
-- that is not in the future is refused (invalid_parameter_value): a slip of
-- the keyboard must not resume the task at once. One row per task found:
-- done, or the refusal.
CREATE FUNCTION sisy_pause_tasks_v1(p_task_ids bigint[], p_note text, p_until timestamptz)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    noted boolean := coalesce(p_note, '') <> '' OR p_until IS NOT NULL;
    by_whom text := coalesce(
        nullif(current_setting('sisy.actor', true), ''),
        session_user || coalesce(' (' || nullif(current_setting('application_name'), '') || ')', '')
    );
BEGIN
    IF p_until IS NOT NULL AND p_until <= clock_timestamp() THEN
        RAISE EXCEPTION 'sisy: a pause must end in the future, not at %', p_until
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Without an end, the task stays paused until it is resumed.';
    END IF;
    RETURN QUERY
    WITH target AS (
        SELECT t.id, t.label, t.enabled,
               CASE WHEN r.refusal = 'already_paused' AND noted THEN NULL
                    ELSE r.refusal END AS refusal
          FROM sisy_task AS t
         CROSS JOIN LATERAL (
               SELECT sisy_refusal_v1('pause', t.enabled, t.finished_at, t.error) AS refusal
         ) AS r
         WHERE t.id = ANY (p_task_ids)
         ORDER BY t.id
           FOR NO KEY UPDATE OF t
    ), paused AS (
        UPDATE sisy_task AS t SET enabled = false
          FROM target
         WHERE t.id = target.id AND target.refusal IS NULL AND target.enabled
    ), kept AS (
        INSERT INTO sisy_task_pause AS p (task_id, note, until, paused_at, paused_by)
        SELECT target.id, coalesce(p_note, ''), p_until, clock_timestamp(), by_whom
          FROM target
         WHERE target.refusal IS NULL AND noted
        ON CONFLICT ON CONSTRAINT sisy_task_pause_pkey DO UPDATE
           SET note = excluded.note, until = excluded.until,
               paused_at = excluded.paused_at, paused_by = excluded.paused_by
    )
    SELECT target.id, target.label, target.refusal IS NULL, target.refusal
      FROM target
     ORDER BY target.id;
END;
$$;
COMMENT ON FUNCTION sisy_pause_tasks_v1(bigint[], text, timestamptz) IS
    'internal: called by the Python API, the admin, manage.py sisy and sisy_pause_v2. Pauses '
    'tasks p_task_ids with note p_note and end p_until (NULL: none). One row per task: task_id, '
    'label, done, refusal.';

-- sisy_pause_v1 with a note and an end, for a session without Django
-- (docs/pausing.md): the task named p_task (a label, or an id), done or
-- refused with the reason. SECURITY DEFINER, as sisy_pause_v1.
CREATE FUNCTION sisy_pause_v2(p_task text, p_note text DEFAULT '', p_until timestamptz DEFAULT NULL)
    RETURNS TABLE (task_id bigint, label varchar, done boolean, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_pause_tasks_v1(ARRAY[sisy_task_id_v1(p_task)], p_note, p_until);
$$;
COMMENT ON FUNCTION sisy_pause_v2(text, text, timestamptz) IS
    'Pauses a task, with a note and an end (version 2 of sisy_pause). p_task: its label, or its '
    'id; p_note: why; p_until: when the planners resume it. Returns one row: task_id, label, '
    'done, refusal. Operators call sisy_pause, which calls the current version.';

-- A task's pause as the edges show it (a JSON object: note, until,
-- paused_at, paused_by), or NULL: not paused, or paused with neither a note
-- nor an end.
CREATE FUNCTION sisy_pause_of_v1(p_task_id bigint, p_enabled boolean) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path FROM CURRENT
AS $$
    SELECT jsonb_build_object(
               'note', p.note, 'until', p.until, 'paused_at', p.paused_at,
               'paused_by', p.paused_by
           )
      FROM sisy_task_pause AS p
     WHERE p.task_id = p_task_id AND NOT p_enabled;
$$;
COMMENT ON FUNCTION sisy_pause_of_v1(bigint, boolean) IS
    'internal: called by the Python API and the admin. Task p_task_id''s pause as a JSON object '
    '(note, until, paused_at, paused_by), or NULL: not paused (p_enabled), or paused with '
    'neither a note nor an end.';

-- Resumes up to p_limit tasks whose pause ended (until at or before the
-- database's clock), as sisy_act_v1's resume does, skipping the rows another
-- transaction holds (a writer changing that task: its commit wakes the
-- planners). A pause that ended goes, resumed or not (a finished task stays
-- finished), so that no planner wakes for it again. Called by the planners
-- when the earliest end is due; SECURITY DEFINER: the worker role resumes
-- through it, with no right to enable a task otherwise. One row per pause
-- ended.
CREATE FUNCTION sisy_end_pauses_v1(p_limit integer)
    RETURNS TABLE (
        task_id bigint, label varchar, until timestamptz, resumed boolean, refusal text
    )
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    measured_at timestamptz := clock_timestamp();
    ended bigint[];
    ends timestamptz[];
BEGIN
    -- A row left by a task gone without its triggers would wake the planners forever.
    DELETE FROM sisy_task_pause AS p
     WHERE p.until <= measured_at
       AND NOT EXISTS (SELECT FROM sisy_task AS t WHERE t.id = p.task_id);
    WITH due AS (
        SELECT p.task_id
          FROM sisy_task_pause AS p
          JOIN sisy_task AS t ON t.id = p.task_id
         WHERE p.until <= measured_at
         ORDER BY p.until
         LIMIT p_limit
           FOR NO KEY UPDATE OF t SKIP LOCKED
    ), gone AS (
        DELETE FROM sisy_task_pause AS p USING due WHERE p.task_id = due.task_id
        RETURNING p.task_id, p.until
    )
    SELECT array_agg(gone.task_id ORDER BY gone.task_id),
           array_agg(gone.until ORDER BY gone.task_id)
      INTO ended, ends
      FROM gone;
    IF ended IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT a.task_id, a.label, e.until, a.done, a.refusal
      FROM sisy_act_v1('resume', ended) AS a
      JOIN unnest(ended, ends) AS e(task_id, until) ON e.task_id = a.task_id
     ORDER BY a.task_id;
END;
$$;
COMMENT ON FUNCTION sisy_end_pauses_v1(integer) IS
    'internal: called by the planner (end_pauses). Resumes up to p_limit tasks whose pause '
    'ended. One row per pause ended: task_id, label, until, resumed, refusal.';

-- Audit: every change to a task, by any writer ---------------------------------------------
-- Triggers on sisy_task record each change of a task -- an ORM save, a
-- queryset update, the admin's forms, buttons and actions, manage.py sisy, a
-- migration, psql -- in the append-only table sisy_task_change, with who made
-- it and through what; the view sisy_task_changes shows them (docs/audit.md).
-- The writer names itself in two settings the triggers read: sisy.actor and
-- sisy.via, transaction-local for sisy_pg.audit.acting_as (the admin, the CLI,
-- code), a session's for every Django connection (via 'api', or 'migration'
-- while migrate runs). A session that says nothing is 'sql' (or 'worker', a
-- worker's own connections), and its actor is its role and application_name.
-- What the workers keep (next_run, last_run, fire_count, finished_at) and
-- modified_at are left out. Kept as long as the run history
-- (sisy_prune_task_changes_v1, SISY_RUN_RETENTION_DAYS).

-- One row per change of a task (task_id NULL: a TRUNCATE of them all). No
-- model maps it, and no foreign key: a deleted task's changes stay.
CREATE TABLE sisy_task_change (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id bigint NULL,
    label varchar(255) NULL,  -- the task's after the change (before it, for a delete)
    operation text NOT NULL
        CONSTRAINT sisy_task_change_operation_known
            CHECK (operation IN ('insert', 'update', 'delete', 'truncate')),
    changed_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,  -- the Django user, else db_role (application_name)
    via text NOT NULL,  -- admin, cli, api, sql, migration, worker
    db_role text NOT NULL,  -- session_user: who logged in, whatever the actor says
    application_name text NOT NULL,
    -- {"column": {"old": ..., "new": ...}} for each column that changed
    changes jsonb NOT NULL
        CONSTRAINT sisy_task_change_changes_is_object CHECK (jsonb_typeof(changes) = 'object')
);
-- A task's changes, newest first (the admin, manage.py sisy show).
CREATE INDEX sisy_task_change_task_idx ON sisy_task_change (task_id, id);
-- The oldest, for the retention.
CREATE INDEX sisy_task_change_changed_at_idx ON sisy_task_change (changed_at);

-- The columns of a task's definition that differ between two versions of its
-- row (to_jsonb; NULL: none, for an insert or a delete), as {"column": {"old":
-- ..., "new": ...}}; an empty text counts as none. next_run only with
-- p_with_next_run: a writer that sets it asks for a run at that instant ("run
-- now"), where the workers' planning is noise.
CREATE FUNCTION sisy_task_diff_v1(p_old jsonb, p_new jsonb, p_with_next_run boolean)
    RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path FROM CURRENT
AS $$
    SELECT coalesce(jsonb_object_agg(
               k.name, jsonb_build_object('old', p_old -> k.name, 'new', p_new -> k.name)
           ), '{}')
      FROM unnest(ARRAY[
               'label', 'callable_info', 'schedule', 'timezone', 'enabled', 'start_running',
               'end_running', 'iterations', 'wait_for_schedule', 'allow_overlap', 'userdata',
               'options', 'error', 'next_run'
           ]) AS k(name)
     WHERE (k.name <> 'next_run' OR p_with_next_run)
       AND coalesce(nullif(p_old -> k.name, '""'), 'null')
           IS DISTINCT FROM coalesce(nullif(p_new -> k.name, '""'), 'null');
$$;
COMMENT ON FUNCTION sisy_task_diff_v1(jsonb, jsonb, boolean) IS
    'internal: called by the audit''s triggers. The columns of a task''s definition that differ '
    'between two versions of its row, as {column: {old, new}}, or NULL; next_run only with '
    'p_with_next_run.';

-- Records the changes of the statement or row that fired it, as the writer
-- names itself (see the section's head). A worker's connections
-- (application_name sisy-planner, sisy-runner) are 'worker' even where a
-- pooler left a Django session's 'api' on them. SECURITY DEFINER: no writer
-- needs a right on sisy_task_change, and none can skip its row.
CREATE FUNCTION sisy_task_audit_v1() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    w_app text := current_setting('application_name');
    w_via text := nullif(current_setting('sisy.via', true), '');
    w_actor text := nullif(current_setting('sisy.actor', true), '');
    changed jsonb;
BEGIN
    IF w_app IN ('sisy-planner', 'sisy-runner') AND coalesce(w_via, 'api') = 'api' THEN
        w_via := 'worker';
    END IF;
    w_via := coalesce(w_via, 'sql');
    w_actor := coalesce(w_actor, session_user || CASE WHEN w_app = '' THEN ''
                                                      ELSE ' (' || w_app || ')' END);
    IF TG_OP = 'UPDATE' THEN
        changed := sisy_task_diff_v1(
            to_jsonb(OLD), to_jsonb(NEW), w_via <> 'worker' AND NEW.next_run IS NOT NULL
        );
        IF changed <> '{}' THEN
            INSERT INTO sisy_task_change AS c
                   (task_id, label, operation, actor, via, db_role, application_name, changes)
            VALUES (NEW.id, NEW.label, 'update', w_actor, w_via, session_user, w_app, changed);
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO sisy_task_change AS c
               (task_id, label, operation, actor, via, db_role, application_name, changes)
        SELECT n.id, n.label, 'insert', w_actor, w_via, session_user, w_app,
               sisy_task_diff_v1(NULL, to_jsonb(n), false)
          FROM sisy_task_inserted AS n
         ORDER BY n.id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO sisy_task_change AS c
               (task_id, label, operation, actor, via, db_role, application_name, changes)
        SELECT o.id, o.label, 'delete', w_actor, w_via, session_user, w_app,
               sisy_task_diff_v1(to_jsonb(o), NULL, false)
          FROM sisy_task_deleted AS o
         ORDER BY o.id;
    ELSE  -- TRUNCATE: no row to name
        INSERT INTO sisy_task_change AS c
               (task_id, label, operation, actor, via, db_role, application_name, changes)
        VALUES (NULL, NULL, 'truncate', w_actor, w_via, session_user, w_app, '{}');
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_task_audit_v1() IS
    'internal: the triggers sisy_task_audit_insert_v1, sisy_task_audit_update_v1, '
    'sisy_task_audit_delete_v1 and sisy_task_audit_truncate_v1. Records each change of a task '
    'in sisy_task_change, with who made it and through what.';

-- Inserts and deletes are recorded a statement at a time (its rows, from the
-- transition table: one INSERT however many tasks). Updates a row at a time,
-- and only those that change a column the audit keeps: the WHEN clause lets
-- the planners' writes (next_run, last_run, fire_count) by without a call.
CREATE TRIGGER sisy_task_audit_insert_v1
    AFTER INSERT ON sisy_task
    REFERENCING NEW TABLE AS sisy_task_inserted
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_audit_v1();

CREATE TRIGGER sisy_task_audit_update_v1
    AFTER UPDATE ON sisy_task
    FOR EACH ROW WHEN (
        (OLD.label, OLD.callable_info, OLD.schedule, OLD.timezone, OLD.enabled,
         OLD.start_running, OLD.end_running, OLD.iterations, OLD.wait_for_schedule,
         OLD.allow_overlap, OLD.userdata, OLD.options, OLD.error)
        IS DISTINCT FROM
        (NEW.label, NEW.callable_info, NEW.schedule, NEW.timezone, NEW.enabled,
         NEW.start_running, NEW.end_running, NEW.iterations, NEW.wait_for_schedule,
         NEW.allow_overlap, NEW.userdata, NEW.options, NEW.error)
        OR (NEW.next_run IS NOT NULL AND NEW.next_run IS DISTINCT FROM OLD.next_run
            AND current_setting('application_name') NOT IN ('sisy-planner', 'sisy-runner'))
    )
    EXECUTE FUNCTION sisy_task_audit_v1();

CREATE TRIGGER sisy_task_audit_delete_v1
    AFTER DELETE ON sisy_task
    REFERENCING OLD TABLE AS sisy_task_deleted
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_audit_v1();

CREATE TRIGGER sisy_task_audit_truncate_v1
    AFTER TRUNCATE ON sisy_task
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_audit_v1();

-- A pause's note and end (sisy_task_pause, docs/pausing.md) are part of the task's
-- definition for the audit: set or changed, they are recorded as an update of the task
-- (changes pause_note, paused_until), by the writer the session names, as above. Pausing
-- itself shows as enabled true -> false; a pause ended (its row deleted) as the reverse.
CREATE FUNCTION sisy_task_pause_audit_v1() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    w_app text := current_setting('application_name');
    w_via text := nullif(current_setting('sisy.via', true), '');
    w_actor text := nullif(current_setting('sisy.actor', true), '');
    old_note text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.note ELSE '' END;
    old_until timestamptz := CASE WHEN TG_OP = 'UPDATE' THEN OLD.until END;
    changed jsonb := '{}';
BEGIN
    IF NEW.note IS DISTINCT FROM old_note THEN
        changed := changed || jsonb_build_object(
            'pause_note', jsonb_build_object('old', nullif(old_note, ''), 'new', nullif(NEW.note, ''))
        );
    END IF;
    IF NEW.until IS DISTINCT FROM old_until THEN
        changed := changed || jsonb_build_object(
            'paused_until', jsonb_build_object('old', old_until, 'new', NEW.until)
        );
    END IF;
    IF changed = '{}' THEN
        RETURN NULL;
    END IF;
    IF w_app IN ('sisy-planner', 'sisy-runner') AND coalesce(w_via, 'api') = 'api' THEN
        w_via := 'worker';
    END IF;
    INSERT INTO sisy_task_change AS c
           (task_id, label, operation, actor, via, db_role, application_name, changes)
    SELECT t.id, t.label, 'update',
           coalesce(w_actor, session_user || CASE WHEN w_app = '' THEN ''
                                                  ELSE ' (' || w_app || ')' END),
           coalesce(w_via, 'sql'), session_user, w_app, changed
      FROM sisy_task AS t
     WHERE t.id = NEW.task_id;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_task_pause_audit_v1() IS
    'internal: the trigger sisy_task_pause_audit_v1. Records a pause''s note and end, set or '
    'changed, as a change of its task.';

CREATE TRIGGER sisy_task_pause_audit_v1
    AFTER INSERT OR UPDATE ON sisy_task_pause
    FOR EACH ROW EXECUTE FUNCTION sisy_task_pause_audit_v1();

-- sisy_task_change is append-only: an UPDATE, a DELETE or a TRUNCATE of it is
-- refused, but for the retention's deletes (sisy_prune_task_changes_v1). A
-- guard against mistakes: the table's owner may still drop the trigger.
CREATE FUNCTION sisy_task_change_append_only_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('sisy.pruning_changes', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'sisy: sisy_task_change is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Changes older than the run history are pruned with it '
                     '(SISY_RUN_RETENTION_DAYS).';
END;
$$;
COMMENT ON FUNCTION sisy_task_change_append_only_v1() IS
    'internal: the trigger sisy_task_change_append_only_v1. Refuses an UPDATE, a DELETE or a '
    'TRUNCATE of sisy_task_change, but for the retention''s deletes.';

CREATE TRIGGER sisy_task_change_append_only_v1
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sisy_task_change
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_change_append_only_v1();

-- Retention: deletes up to p_limit changes made longer than p_retention ago,
-- oldest first (the housekeeping, with sisy_prune_runs_v1). SECURITY DEFINER:
-- the worker role may prune without any right on the table.
CREATE FUNCTION sisy_prune_task_changes_v1(p_retention interval, p_limit integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    pruned integer;
BEGIN
    PERFORM set_config('sisy.pruning_changes', 'on', true);
    WITH old AS (
        SELECT c.id FROM sisy_task_change AS c
         WHERE c.changed_at < now() - p_retention
         ORDER BY c.changed_at
         LIMIT p_limit
    ), deleted AS (
        DELETE FROM sisy_task_change AS c USING old WHERE c.id = old.id
        RETURNING c.id
    )
    SELECT count(*)::integer INTO pruned FROM deleted;
    PERFORM set_config('sisy.pruning_changes', '', true);
    RETURN pruned;
END;
$$;
COMMENT ON FUNCTION sisy_prune_task_changes_v1(interval, integer) IS
    'internal: called by the housekeeping (prune_task_changes). Deletes up to p_limit changes '
    'of tasks made more than p_retention ago. Returns how many.';

-- Every change of every task, with who made it (actor), through what (via:
-- admin, cli, api, sql, migration, worker) and what changed (changes: each
-- column's old and new value). It shows userdata and callable_info: the
-- roles of sql/roles.sql are not granted it.
CREATE VIEW sisy_task_changes AS
SELECT c.task_id, c.changed_at, c.actor, c.via, c.changes,
       c.operation, c.label, c.db_role, c.application_name, c.id
  FROM sisy_task_change AS c;
COMMENT ON VIEW sisy_task_changes IS
    'Every change of every task, by any writer: when (changed_at), who (actor), through what '
    '(via: admin, cli, api, sql, migration, worker) and what changed (changes: each column''s '
    'old and new value). It shows userdata and callables: the roles of sql/roles.sql are not '
    'granted it. docs/audit.md';

-- Backfill and jitter ----------------------------------------------------------------------
-- A backfill runs the past instants of a task's schedule in a range, each one
-- once however often it is asked (docs/backfill.md). sisy_backfill_v1 records
-- the request; its instants are computed in Python (croniter, the task's time
-- zone, as the planner computes them: sisy_pg/backfill.py), by the command or
-- the admin that asked, in the same transaction, or by a planner for a request
-- made in SQL; sisy_store_backfill_v1 queues a run for each instant that has no
-- row, or whose row says it was not run (missed, skipped, cancelled), and
-- leaves alone those that ran or will: the unique (task, instant) makes a
-- second request run nothing twice. A task's backfill runs run one at a time,
-- oldest first: the end of one defers the job of the next
-- (sisy_taskrun_backfill_next_v1), so that a backfill takes one of a worker's
-- callable slots at most, never its task's whole share. They are not fires of
-- the schedule (fire_count, last_run and iterations ignore them, a fire does
-- not coalesce into them) and are never late.
--
-- Jitter (options.jitter, docs/jitter-and-queues.md): the planner delays the
-- run of an instant by details.jitter seconds, derived from the task and the
-- instant (sisy_pg.policies.jitter_delay), to details.due_at, and holds it
-- without a job until then: sisy_release_jittered_runs_v1 defers its job
-- SISY_LEAD_TIME ahead, as for any fire, so that a run waiting for its delay
-- holds no worker slot.

-- One row per backfill asked for; its counts once its instants are computed.
-- No model maps it. Deleted with its task (triggers, not a foreign key, which
-- would refuse Django's flush its TRUNCATE of sisy_task), or after
-- SISY_RUN_RETENTION_DAYS once none of its runs waits (sisy_prune_backfills_v1).
CREATE TABLE sisy_backfill (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id bigint NOT NULL,
    range_from timestamp with time zone NOT NULL,
    -- At most when it was asked: the instants to come are the schedule's.
    range_to timestamp with time zone NOT NULL,
    -- The most instants it may run (NULL: SISY_BACKFILL_LIMIT, which caps it).
    max_instants integer NULL
        CONSTRAINT sisy_backfill_max_instants_positive CHECK (max_instants > 0),
    requested_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    -- Who asked: the writer's actor (sisy.actor: sisy_pg.audit.acting_as, the
    -- admin's user, manage.py sisy --as), else the database role and application.
    requested_by text NOT NULL,
    -- Set once its instants are computed: how many, how many runs were queued,
    -- how many had run or were to run already; or why none was queued.
    expanded_at timestamp with time zone NULL,
    instants integer NULL,
    queued integer NULL,
    already integer NULL,
    error text NOT NULL DEFAULT '',
    -- Where the jobs of its runs go: the queue of the planner that computed it
    -- (SISY_QUEUE; a task's options.queue wins), and the runner's task name.
    queue text NULL,
    task_name text NULL,
    CONSTRAINT sisy_backfill_range CHECK (range_from <= range_to)
);
-- The requests made in SQL that a planner has still to compute (planner_state).
CREATE INDEX sisy_backfill_pending_idx ON sisy_backfill (id) WHERE expanded_at IS NULL;
-- The runs held for their jitter (planner_state, sisy_release_jittered_runs_v1).
CREATE INDEX sisy_taskrun_jitter_held_idx
    ON sisy_taskrun (scheduled_for)
    WHERE status = 'queued' AND job_id IS NULL AND details ? 'jitter';

-- Asks for a backfill of task p_task_id's instants from p_from through p_to
-- (no later than now), p_limit at most (NULL: SISY_BACKFILL_LIMIT, the most
-- any backfill may run). Refused, as a run now is (sisy_refusal_v1), for a
-- task paused, finished or broken: then nothing is recorded. No row for a
-- task not found. Notifies the planners: one of them computes the instants of
-- a request its asker leaves pending (one made in SQL).
CREATE FUNCTION sisy_request_backfill_v1(
    p_task_id bigint, p_from timestamptz, p_to timestamptz, p_limit integer
)
    RETURNS TABLE (backfill_id bigint, task_id bigint, label varchar, refusal text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    task sisy_task;
    refused text;
    request_id bigint;
    now_ timestamptz := clock_timestamp();
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_from > p_to THEN
        RAISE EXCEPTION 'sisy: a backfill needs a range whose start (%) is not after its end (%)',
                        coalesce(p_from::text, 'none'), coalesce(p_to::text, 'none')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_from > now_ THEN
        RAISE EXCEPTION 'sisy: a backfill runs past instants; % is still to come', p_from
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The instants to come are the schedule''s own.';
    END IF;
    IF p_limit IS NOT NULL AND p_limit < 1 THEN
        RAISE EXCEPTION 'sisy: a backfill''s limit must be at least 1, not %', p_limit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO task FROM sisy_task AS t WHERE t.id = p_task_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    refused := sisy_refusal_v1('run_now', task.enabled, task.finished_at, task.error);
    IF refused IS NULL THEN
        INSERT INTO sisy_backfill (task_id, range_from, range_to, max_instants, requested_by)
        VALUES (
            task.id, p_from, least(p_to, now_), p_limit,
            coalesce(
                nullif(current_setting('sisy.actor', true), ''),
                session_user
                || coalesce(' (' || nullif(current_setting('application_name'), '') || ')', '')
            )
        )
        RETURNING id INTO request_id;
        PERFORM pg_notify('sisy_task_changed', '');
    END IF;
    RETURN QUERY SELECT request_id, task.id, task.label, refused;
END;
$$;
COMMENT ON FUNCTION sisy_request_backfill_v1(bigint, timestamptz, timestamptz, integer) IS
    'internal: called by manage.py sisy backfill, the admin and sisy_backfill_v1. Asks for a '
    'backfill of task p_task_id''s instants from p_from through p_to, p_limit at most. One row: '
    'backfill_id, task_id, label, refusal; none for a task not found.';

-- What manage.py sisy backfill does, for a session without Django: the task
-- named p_task (a label, or an id: sisy_task_id_v1). A planner computes the
-- instants a moment later (SELECT * FROM sisy_backfill shows them).
-- SECURITY DEFINER: the operator role may call it (sql/roles.sql).
CREATE FUNCTION sisy_backfill_v1(
    p_task text, p_from timestamptz, p_to timestamptz, p_limit integer DEFAULT NULL
)
    RETURNS TABLE (backfill_id bigint, task_id bigint, label varchar, refusal text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
    SELECT * FROM sisy_request_backfill_v1(sisy_task_id_v1(p_task), p_from, p_to, p_limit);
$$;
COMMENT ON FUNCTION sisy_backfill_v1(text, timestamptz, timestamptz, integer) IS
    'Runs the past instants of a task''s schedule from p_from through p_to (version 1 of '
    'sisy_backfill). p_task: its label, or its id; p_limit: the most instants (NULL: '
    'SISY_BACKFILL_LIMIT). Returns one row: backfill_id, task_id, label, refusal. Operators '
    'call sisy_backfill, which calls the current version.';

-- Records the instants p_instants computed for backfill p_backfill_id, or why
-- none is run (p_error: more instants than its limit, a schedule that cannot
-- be planned). Under the task's row lock, refused again if the task was
-- paused, finished or broken meanwhile (its runs would outlive the pause).
-- Each instant of the range gets a queued run (details.backfill and
-- backfill_id) unless its row says it ran or will run; a row that says it was
-- not run (missed, skipped, cancelled) becomes that run, what it said kept in
-- details.was. The runs wait without a job for their turn
-- (sisy_release_backfill_v1), on queue p_queue (a task's options.queue wins),
-- for the runner task p_task_name. Done once: a request already computed
-- returns what it recorded.
CREATE FUNCTION sisy_store_backfill_v1(
    p_backfill_id bigint, p_instants timestamptz[], p_error text, p_queue text,
    p_task_name text
)
    RETURNS TABLE (instants integer, queued integer, already integer, error text)
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    request sisy_backfill;
    task sisy_task;
    asked timestamptz[];
    refused text;
    converted integer := 0;
    inserted integer := 0;
    now_ timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO request FROM sisy_backfill AS b WHERE b.id = p_backfill_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'sisy: no backfill %', p_backfill_id USING ERRCODE = 'no_data_found';
    END IF;
    IF request.expanded_at IS NULL THEN
        -- The lock of sisy_release_backfill_v1 first, then the task's row, as
        -- a runner breaking the task takes them.
        PERFORM pg_advisory_xact_lock(20820, (request.task_id % 2147483647)::integer);
        SELECT * INTO task FROM sisy_task AS t WHERE t.id = request.task_id FOR SHARE;
        refused := sisy_refusal_v1('run_now', task.enabled, task.finished_at, task.error);
        asked := ARRAY(
            SELECT DISTINCT i FROM unnest(p_instants) AS i
             WHERE i BETWEEN request.range_from AND request.range_to
             ORDER BY i
        );
        IF coalesce(p_error, '') = '' AND refused IS NULL THEN
            WITH again AS (
                UPDATE sisy_taskrun AS r
                   SET status = 'queued', queued_at = now_, started_at = NULL,
                       finished_at = NULL, error = '', traceback = '', job_id = NULL,
                       worker = '',
                       details = jsonb_build_object(
                           'backfill', true, 'backfill_id', request.id,
                           'was', jsonb_build_object('status', r.status, 'error', r.error)
                                  || r.details
                       )
                 WHERE r.task_id = request.task_id AND r.scheduled_for = ANY (asked)
                   AND r.status IN ('skipped', 'missed', 'cancelled')
                RETURNING 1
            )
            SELECT count(*)::integer INTO converted FROM again;
            WITH added AS (
                INSERT INTO sisy_taskrun AS r (task_id, scheduled_for, status, queued_at, details)
                SELECT request.task_id, i, 'queued', now_,
                       jsonb_build_object('backfill', true, 'backfill_id', request.id)
                  FROM unnest(asked) AS i
                ON CONFLICT (task_id, scheduled_for) DO NOTHING
                RETURNING 1
            )
            SELECT count(*)::integer INTO inserted FROM added;
        END IF;
        UPDATE sisy_backfill AS b
           SET expanded_at = now_,
               instants = cardinality(asked),
               queued = converted + inserted,
               already = CASE WHEN coalesce(p_error, '') = '' AND refused IS NULL
                              THEN cardinality(asked) - converted - inserted ELSE 0 END,
               error = coalesce(nullif(p_error, ''), 'the task is ' || refused, ''),
               queue = p_queue, task_name = p_task_name
         WHERE b.id = request.id
        RETURNING * INTO request;
        PERFORM sisy_release_backfill_v1(request.task_id);
    END IF;
    RETURN QUERY SELECT request.instants, request.queued, request.already, request.error;
END;
$$;
COMMENT ON FUNCTION sisy_store_backfill_v1(bigint, timestamptz[], text, text, text) IS
    'internal: called by what computed a backfill''s instants (manage.py sisy backfill, the '
    'admin, a planner). Queues a run for each instant p_instants of backfill p_backfill_id that '
    'has none, or records why none is run (p_error). Returns instants, queued, already, error.';

-- Defers the job of the earliest run of task p_task_id waiting for its turn in
-- a backfill, unless one of its backfill runs is on its way (queued with a
-- job, or running): a task's backfills run one run at a time, oldest first.
-- Returns 1 when one was deferred.
CREATE FUNCTION sisy_release_backfill_v1(p_task_id bigint) RETURNS integer
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    next_run record;
    now_ timestamptz := clock_timestamp();
BEGIN
    -- None waits (a backfill's last run ended, or its task's runs were
    -- cancelled with it): no lock taken, none waited for.
    IF NOT EXISTS (
        SELECT 1 FROM sisy_taskrun AS r
         WHERE r.task_id = p_task_id AND r.status = 'queued' AND r.job_id IS NULL
           AND r.details ? 'backfill'
    ) THEN
        RETURN 0;
    END IF;
    -- Serialise the releases of a task's backfill runs (sisy's key space, 0x5154).
    PERFORM pg_advisory_xact_lock(20820, (p_task_id % 2147483647)::integer);
    IF EXISTS (
        SELECT 1 FROM sisy_taskrun AS r
         WHERE r.task_id = p_task_id AND r.status IN ('queued', 'running')
           AND r.details ? 'backfill' AND (r.status = 'running' OR r.job_id IS NOT NULL)
    ) THEN
        RETURN 0;
    END IF;
    SELECT r.id, b.queue, b.task_name INTO next_run
      FROM sisy_taskrun AS r
      JOIN sisy_backfill AS b ON b.id = (r.details ->> 'backfill_id')::bigint
     WHERE r.task_id = p_task_id AND r.status = 'queued' AND r.job_id IS NULL
       AND r.details ? 'backfill' AND b.queue IS NOT NULL
     ORDER BY r.scheduled_for
     LIMIT 1
       FOR UPDATE OF r;
    IF next_run.id IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE sisy_taskrun AS r
       SET job_id = (
               sisy_defer_run_jobs_v1(
                   next_run.queue, next_run.task_name, ARRAY[r.id], ARRAY[now_], 1, NULL
               )
           )[1],
           details = r.details || jsonb_build_object('due_at', now_)
     WHERE r.id = next_run.id;
    RETURN 1;
END;
$$;
COMMENT ON FUNCTION sisy_release_backfill_v1(bigint) IS
    'internal: called by sisy_store_backfill_v1 and when a backfill run ends. Defers the job of '
    'the next backfill run of task p_task_id, one at a time. Returns 1 when one was deferred.';

-- A backfill run ended (however: succeeded, failed, skipped, missed,
-- cancelled, worker lost): the next one of its task gets its job.
CREATE FUNCTION sisy_taskrun_backfill_next_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM sisy_release_backfill_v1(NEW.task_id);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_taskrun_backfill_next_v1() IS
    'internal: the trigger sisy_taskrun_backfill_next_v1. A backfill run ended: the next one of '
    'its task gets its job.';

CREATE TRIGGER sisy_taskrun_backfill_next_v1
    AFTER UPDATE OF status ON sisy_taskrun
    FOR EACH ROW WHEN (
        OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running')
        AND NEW.details ? 'backfill'
    )
    EXECUTE FUNCTION sisy_taskrun_backfill_next_v1();

-- A task deleted (or all of them truncated) takes its backfills with it.
CREATE FUNCTION sisy_task_forget_backfills_v1() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- Statement level: one join however many tasks the statement deleted.
        IF EXISTS (SELECT FROM sisy_backfill) THEN
            DELETE FROM sisy_backfill AS b USING deleted_tasks AS d WHERE b.task_id = d.id;
        END IF;
    ELSE
        DELETE FROM sisy_backfill;
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION sisy_task_forget_backfills_v1() IS
    'internal: the triggers sisy_task_deleted_forgets_backfills_v1 and '
    'sisy_task_truncated_forgets_backfills_v1. A task deleted takes its backfills with it.';

CREATE TRIGGER sisy_task_deleted_forgets_backfills_v1
    AFTER DELETE ON sisy_task
    REFERENCING OLD TABLE AS deleted_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_forget_backfills_v1();

CREATE TRIGGER sisy_task_truncated_forgets_backfills_v1
    AFTER TRUNCATE ON sisy_task
    FOR EACH STATEMENT EXECUTE FUNCTION sisy_task_forget_backfills_v1();

-- Deletes the backfills asked longer than p_retention ago none of whose runs
-- waits or runs: the history they made goes with the same retention
-- (sisy_prune_runs_v1 calls it). Returns how many.
CREATE FUNCTION sisy_prune_backfills_v1(p_retention interval) RETURNS integer
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    WITH pruned AS (
        DELETE FROM sisy_backfill AS b
         WHERE b.requested_at < clock_timestamp() - p_retention
           AND NOT EXISTS (
               SELECT 1 FROM sisy_taskrun AS r
                WHERE r.task_id = b.task_id AND r.status IN ('queued', 'running')
                  AND r.details ->> 'backfill_id' = b.id::text
           )
        RETURNING 1
    )
    SELECT count(*)::integer FROM pruned;
$$;
COMMENT ON FUNCTION sisy_prune_backfills_v1(interval) IS
    'internal: called by sisy_prune_runs_v1. Deletes the backfills asked more than p_retention '
    'ago none of whose runs waits or runs. Returns how many.';

-- Defers the jobs of the runs held for their jitter (queued, details.jitter,
-- no job) whose due_at is within p_lead, p_runs_per_job runs a job at most, on
-- their task's queue (else p_queue): the planner calls it when planner_state
-- says the earliest is that close. Rows another planner holds are left to it.
-- Returns how many were deferred.
CREATE FUNCTION sisy_release_jittered_runs_v1(
    p_lead interval, p_queue text, p_task_name text, p_runs_per_job integer
)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
AS $$
DECLARE
    run_ids bigint[];
    ats timestamptz[];
BEGIN
    WITH due AS (
        SELECT r.id, (r.details ->> 'due_at')::timestamptz AS at
          FROM sisy_taskrun AS r
         WHERE r.status = 'queued' AND r.job_id IS NULL AND r.details ? 'jitter'
           AND NOT r.details ? 'buffered_behind'
           AND (r.details ->> 'due_at')::timestamptz <= clock_timestamp() + p_lead
           FOR UPDATE SKIP LOCKED
    )
    SELECT array_agg(due.id ORDER BY due.at, due.id), array_agg(due.at ORDER BY due.at, due.id)
      INTO run_ids, ats
      FROM due;
    IF run_ids IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE sisy_taskrun AS r
       SET job_id = j.job_id
      FROM unnest(
               run_ids,
               sisy_defer_run_jobs_v1(p_queue, p_task_name, run_ids, ats, p_runs_per_job, NULL)
           ) AS j(run_id, job_id)
     WHERE r.id = j.run_id;
    RETURN cardinality(run_ids);
END;
$$;
COMMENT ON FUNCTION sisy_release_jittered_runs_v1(interval, text, text, integer) IS
    'internal: called by the planner (release_jittered_runs). Defers the jobs of the runs held '
    'for their jitter that are due within p_lead. Returns how many.';

-- Workers and health ---------------------------------------------------------------------
-- Each worker reports itself in sisy_worker every few seconds (its queues,
-- its callable slots, whether notifications reach it); sisy_health_v1 judges
-- the workers, the tasks and the recent history from it. One decision point
-- for manage.py sisy health, psql and the monitor role (sql/roles.sql).

-- One row per running worker: what its runtime last reported
-- (sisy_worker_seen_v1, every few seconds), deleted when it stops
-- (sisy_worker_gone_v1). No model maps it. id is procrastinate's worker id,
-- without a foreign key: procrastinate deletes its rows its own way.
CREATE TABLE sisy_worker (
    id bigint PRIMARY KEY,
    name text NOT NULL,  -- host:pid:worker-name, as sisy_taskrun.worker
    queues text[] NULL,  -- the queues it serves; NULL: every queue
    plans boolean NOT NULL,  -- a sisy planner runs in it
    concurrency integer NOT NULL,  -- its callable slots
    -- Slots held now (threads busy, stuck ones included), and those held by
    -- runs past their timeout whose callable never returned.
    slots_held integer NOT NULL DEFAULT 0,
    slots_stuck integer NOT NULL DEFAULT 0,
    -- Whether its self-addressed NOTIFYs reach its LISTEN connections ('lost':
    -- a pooler in transaction mode drops them, and the worker polls).
    notifications text NOT NULL DEFAULT 'unknown'
        CONSTRAINT sisy_worker_notifications_known
            CHECK (notifications IN ('unknown', 'ok', 'lost')),
    started_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    seen_at timestamp with time zone NOT NULL DEFAULT clock_timestamp(),
    -- What else it says, e.g. {"stuck_tasks": [...], "stuck_runs": [run ids],
    -- "slots_full_for": seconds full when it reported, or null}
    details jsonb NOT NULL DEFAULT '{}'::jsonb
        CONSTRAINT sisy_worker_details_is_object CHECK (jsonb_typeof(details) = 'object')
);

-- What sisy_health_v1 reads, each through an index, so that a probe costs
-- what is wrong (and the last minutes of history), not what is defined:
-- broken tasks,
CREATE INDEX sisy_task_broken_idx ON sisy_task (id) WHERE error <> '';
-- and runs that timed out whose callable has not returned (its thread still
-- holds a slot of its worker, if that one lives), by worker.
CREATE INDEX sisy_taskrun_unreturned_idx
    ON sisy_taskrun (worker)
    WHERE status = 'timed_out' AND NOT details ? 'returned' AND NOT details ? 'task_result_id';

-- A worker's report of itself, every few seconds: its row, written on the
-- database's clock (seen_at). Rows not seen for a day (workers killed before
-- they could call sisy_worker_gone_v1) are deleted on the way, so the table
-- stays as small as the cluster.
CREATE FUNCTION sisy_worker_seen_v1(
    p_worker_id bigint, p_name text, p_queues text[], p_plans boolean,
    p_concurrency integer, p_slots_held integer, p_slots_stuck integer, p_notifications text,
    p_details jsonb
)
    RETURNS void
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    DELETE FROM sisy_worker AS w
     WHERE w.seen_at < clock_timestamp() - interval '1 day' AND w.id <> p_worker_id;
    INSERT INTO sisy_worker AS w
           (id, name, queues, plans, concurrency, slots_held, slots_stuck, notifications,
            details)
    VALUES (p_worker_id, p_name, p_queues, p_plans, p_concurrency,
            coalesce(p_slots_held, 0), coalesce(p_slots_stuck, 0),
            coalesce(p_notifications, 'unknown'), coalesce(p_details, '{}'))
    ON CONFLICT (id) DO UPDATE
       SET name = EXCLUDED.name, queues = EXCLUDED.queues, plans = EXCLUDED.plans,
           concurrency = EXCLUDED.concurrency, slots_held = EXCLUDED.slots_held,
           slots_stuck = EXCLUDED.slots_stuck, notifications = EXCLUDED.notifications,
           details = EXCLUDED.details, seen_at = clock_timestamp();
$$;
COMMENT ON FUNCTION sisy_worker_seen_v1(
    bigint, text, text[], boolean, integer, integer, integer, text, jsonb
) IS
    'internal: called by each worker every few seconds (worker_seen). Writes its row of '
    'sisy_worker: its queues, whether it plans, its slots, whether notifications reach it.';

-- The worker stopped: its row goes (health no longer counts it).
CREATE FUNCTION sisy_worker_gone_v1(p_worker_id bigint) RETURNS void
    LANGUAGE sql
    SET search_path FROM CURRENT
AS $$
    DELETE FROM sisy_worker AS w WHERE w.id = p_worker_id;
$$;
COMMENT ON FUNCTION sisy_worker_gone_v1(bigint) IS
    'internal: called by a worker that stops (worker_gone). Deletes its row of sisy_worker.';

-- Whether the load sisy_load_v1 measured is overload: more than 10 % of the
-- instants dealt with (at least 10) not run for want of capacity, or a task's
-- next instant more than 5 s overdue. The rule of the planner's overload
-- warning (sisy_pg.liveness.Load.overloaded: a test keeps the two equal).
CREATE FUNCTION sisy_overloaded_v1(
    p_due integer, p_not_run integer, p_overdue_tasks integer, p_max_lag_seconds float8
)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE
    SET search_path FROM CURRENT
AS $$
    SELECT (p_due >= 10 AND p_not_run > 0.10 * p_due)
        OR (p_overdue_tasks > 0 AND p_max_lag_seconds > 5.0);
$$;
COMMENT ON FUNCTION sisy_overloaded_v1(integer, integer, integer, float8) IS
    'internal: called by sisy_health_v1; the rule of the planner''s overload warning. Whether '
    'the load sisy_load_v1 measured is overload.';

-- What is wrong with sisy now: one row per check, always in this order; ok
-- when it finds nothing wrong, subjects the tasks' labels or the workers'
-- names it is about (the first 100), facts its figures. Live worker: its
-- procrastinate heartbeat or its sisy_worker report is younger than
-- p_stalled_after (procrastinate's stalled_worker_timeout). "A few seconds"
-- below is 5 s: while a planner runs, what it does takes milliseconds.
--   workers        a live worker plans the sisy queue (one serving only other
--                  queues plans nothing);
--   unplanned      no enabled task still waits for its first next_run (not
--                  finished, not broken) a few seconds after it was created or
--                  its definition changed;
--   overdue        no enabled task's next_run is more than p_max_overdue past;
--   broken         no enabled task is broken;
--   starving       no task starves: one of its instants was recorded not run for
--                  want of a slot or of time (reason coalesced, backlog, missed,
--                  late, fair_share) in the last p_recent, and of its 10 latest
--                  instants (at least 3), its 3 latest or more than half were;
--   overrun        no run is still running a few seconds past its deadline (the
--                  planners time runs out as the deadline passes);
--   stuck          no run timed out without its callable returning on a live
--                  worker (whose thread it holds: Python cannot stop it);
--   slots_full     no live worker has all its callable slots held (for more
--                  than a few seconds, when it says for how long: details
--                  slots_full_since, an instant, or slots_full_for, seconds);
--   slots_stuck    no live worker has slots held by runs past their timeout;
--   notifications  no live worker has lost its notifications (it polls: its
--                  runs are late; docs/operations.md#connection-poolers);
--   load           the cluster was not overloaded over the last p_recent:
--                  sisy_load_v1 judged by sisy_overloaded_v1 on the instants
--                  not run (lateness is the overdue check's, by p_max_overdue).
-- The starving rule reads the history finished in the last p_recent (index
-- sisy_taskrun_finished_idx) and 10 rows per task found there (the index of
-- sisy_taskrun_once_per_instant); the others read the workers, the tasks
-- waiting, overdue or broken, and the runs running or hung. SECURITY
-- DEFINER: the monitor role may call it without any right on the tables.
CREATE FUNCTION sisy_health_v1(
    p_stalled_after interval DEFAULT '30 seconds',
    p_max_overdue interval DEFAULT '60 seconds',
    p_recent interval DEFAULT '5 minutes'
)
    RETURNS TABLE (check_name text, ok boolean, subjects text[], facts jsonb)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path FROM CURRENT
AS $$
DECLARE
    now_ timestamptz := clock_timestamp();
    few_seconds constant interval := interval '5 seconds';
    shown constant integer := 100;
    starved_reasons constant text[] := ARRAY['coalesced', 'backlog', 'missed', 'late', 'fair_share'];
    live_ids bigint[];
    total integer;
    task_count integer;
    named text[];
    figures jsonb;
BEGIN
    SELECT coalesce(array_agg(live.id ORDER BY live.id), '{}') INTO live_ids
      FROM (
          SELECT h.worker_id AS id FROM sisy_worker_heartbeats_v1() AS h
           WHERE h.last_heartbeat > now_ - p_stalled_after
          UNION
          SELECT w.id FROM sisy_worker AS w WHERE w.seen_at > now_ - p_stalled_after
      ) AS live;

    SELECT coalesce(array_agg(w.name ORDER BY w.id) FILTER (WHERE w.plans), '{}'),
           coalesce(jsonb_agg(jsonb_build_object(
               'id', live.id, 'name', w.name, 'queues', w.queues, 'plans', w.plans,
               'concurrency', w.concurrency, 'slots_held', w.slots_held,
               'slots_stuck', w.slots_stuck, 'notifications', w.notifications,
               'started_at', w.started_at, 'seen_at', w.seen_at, 'details', w.details
           ) ORDER BY live.id), '[]')
      INTO named, figures
      FROM unnest(live_ids) AS live(id)
      LEFT JOIN sisy_worker AS w ON w.id = live.id;
    check_name := 'workers';
    ok := cardinality(named) > 0;
    subjects := named[1:shown];
    facts := jsonb_build_object(
        'live_workers', cardinality(live_ids), 'planners', cardinality(named), 'workers', figures
    );
    RETURN NEXT;

    SELECT count(*)::integer, coalesce((array_agg(t.label::text ORDER BY t.label))[1:shown], '{}')
      INTO total, named
      FROM sisy_task AS t
     WHERE t.enabled AND t.next_run IS NULL AND t.finished_at IS NULL AND t.error = ''
       AND greatest(t.created_at, t.modified_at) < now_ - few_seconds;
    check_name := 'unplanned';
    ok := total = 0;
    subjects := named;
    facts := jsonb_build_object(
        'tasks', total, 'after_seconds', extract(epoch FROM few_seconds)
    );
    RETURN NEXT;

    SELECT count(*)::integer,
           coalesce((array_agg(t.label::text ORDER BY t.next_run, t.label))[1:shown], '{}')
      INTO total, named
      FROM sisy_task AS t
     WHERE t.enabled AND t.next_run IS NOT NULL AND t.next_run < now_ - p_max_overdue
       AND t.finished_at IS NULL AND t.error = '';
    check_name := 'overdue';
    ok := total = 0;
    subjects := named;
    facts := jsonb_build_object('tasks', total);
    RETURN NEXT;

    -- A paused broken task fires nothing: no alarm until it is resumed.
    SELECT count(*)::integer, coalesce((array_agg(t.label::text ORDER BY t.label))[1:shown], '{}')
      INTO total, named
      FROM sisy_task AS t
     WHERE t.error <> '' AND t.enabled;
    check_name := 'broken';
    ok := total = 0;
    subjects := named;
    facts := jsonb_build_object('tasks', total);
    RETURN NEXT;

    WITH candidate AS (
        SELECT DISTINCT r.task_id
          FROM sisy_taskrun AS r
         WHERE r.status IN ('succeeded', 'failed', 'timed_out', 'skipped', 'missed', 'cancelled')
           AND r.finished_at > now_ - p_recent
           AND r.details ->> 'reason' = ANY (starved_reasons)
    ), judged AS (
        SELECT c.task_id,
               count(*)::integer AS instants,
               count(*) FILTER (WHERE latest.starved)::integer AS starved,
               count(*) FILTER (WHERE latest.starved AND latest.rank <= 3)::integer AS last_starved
          FROM candidate AS c
          CROSS JOIN LATERAL (
              SELECT last10.starved,
                     row_number() OVER (ORDER BY last10.scheduled_for DESC) AS rank
                FROM (
                    SELECT r.scheduled_for,
                           coalesce(r.details ->> 'reason' = ANY (starved_reasons), false)
                               AS starved
                      FROM sisy_taskrun AS r
                     WHERE r.task_id = c.task_id AND r.scheduled_for <= now_
                     ORDER BY r.scheduled_for DESC
                     LIMIT 10
                ) AS last10
          ) AS latest
         GROUP BY c.task_id
    )
    SELECT count(*)::integer, coalesce((array_agg(t.label::text ORDER BY t.label))[1:shown], '{}')
      INTO total, named
      FROM judged AS j
      JOIN sisy_task AS t ON t.id = j.task_id
     WHERE t.enabled AND t.finished_at IS NULL AND t.error = ''
       AND j.instants >= 3 AND (j.last_starved = 3 OR j.starved * 2 > j.instants);
    check_name := 'starving';
    ok := total = 0;
    subjects := named;
    facts := jsonb_build_object('tasks', total, 'recent_seconds', extract(epoch FROM p_recent));
    RETURN NEXT;

    SELECT count(*)::integer, count(DISTINCT r.task_id)::integer,
           coalesce((array_agg(DISTINCT t.label::text ORDER BY t.label::text))[1:shown], '{}')
      INTO total, task_count, named
      FROM sisy_taskrun AS r
      JOIN sisy_task AS t ON t.id = r.task_id
     WHERE r.status = 'running' AND r.details ? 'deadline'
       AND (r.details ->> 'deadline')::timestamptz < now_ - few_seconds;
    check_name := 'overrun';
    ok := total = 0;
    subjects := named;
    facts := jsonb_build_object(
        'runs', total, 'tasks', task_count, 'past_seconds', extract(epoch FROM few_seconds)
    );
    RETURN NEXT;

    SELECT count(*)::integer, count(DISTINCT r.task_id)::integer,
           coalesce((array_agg(DISTINCT t.label::text ORDER BY t.label::text))[1:shown], '{}')
      INTO total, task_count, named
      FROM sisy_taskrun AS r
      JOIN sisy_task AS t ON t.id = r.task_id
     WHERE r.status = 'timed_out' AND NOT r.details ? 'returned'
       AND NOT r.details ? 'task_result_id'  -- an enqueue returned; its task runs elsewhere
       AND (EXISTS (SELECT 1 FROM sisy_worker AS w
                     WHERE w.id = ANY (live_ids) AND w.name = r.worker)
            OR (r.job_id IS NOT NULL AND sisy_job_alive_v1(r.job_id, p_stalled_after)));
    check_name := 'stuck';
    ok := total = 0;
    subjects := named;
    facts := jsonb_build_object('runs', total, 'tasks', task_count);
    RETURN NEXT;

    SELECT coalesce(array_agg(w.name ORDER BY w.id), '{}'),
           coalesce(jsonb_agg(jsonb_build_object(
               'name', w.name, 'slots_held', w.slots_held, 'concurrency', w.concurrency
           ) ORDER BY w.id), '[]')
      INTO named, figures
      FROM sisy_worker AS w
     WHERE w.id = ANY (live_ids) AND w.slots_held >= w.concurrency
       -- Since when, if it says: an instant, or seconds full when it reported.
       AND coalesce(
           coalesce(
               CASE jsonb_typeof(w.details -> 'slots_full_since')
                   WHEN 'string' THEN (w.details ->> 'slots_full_since')::timestamptz
               END,
               CASE jsonb_typeof(w.details -> 'slots_full_for')
                   WHEN 'number' THEN
                       w.seen_at - make_interval(secs => (w.details ->> 'slots_full_for')::float8)
               END
           ) < now_ - few_seconds,
           true
       );
    check_name := 'slots_full';
    ok := cardinality(named) = 0;
    subjects := named[1:shown];
    facts := jsonb_build_object('workers', figures);
    RETURN NEXT;

    SELECT coalesce(array_agg(w.name ORDER BY w.id), '{}'),
           coalesce(jsonb_agg(jsonb_build_object(
               'name', w.name, 'slots_stuck', w.slots_stuck, 'concurrency', w.concurrency,
               'stuck_tasks', w.details -> 'stuck_tasks'
           ) ORDER BY w.id), '[]')
      INTO named, figures
      FROM sisy_worker AS w
     WHERE w.id = ANY (live_ids) AND w.slots_stuck > 0;
    check_name := 'slots_stuck';
    ok := cardinality(named) = 0;
    subjects := named[1:shown];
    facts := jsonb_build_object('workers', figures);
    RETURN NEXT;

    SELECT coalesce(array_agg(w.name ORDER BY w.id), '{}') INTO named
      FROM sisy_worker AS w
     WHERE w.id = ANY (live_ids) AND w.notifications = 'lost';
    check_name := 'notifications';
    ok := cardinality(named) = 0;
    subjects := named[1:shown];
    facts := jsonb_build_object('workers', cardinality(named));
    RETURN NEXT;

    SELECT to_jsonb(l) INTO figures FROM sisy_load_v1(p_recent) AS l;
    check_name := 'load';
    -- Judged on the instants not run alone: lateness is the overdue check's,
    -- by p_max_overdue (a probe told to allow 10 minutes allows them here too).
    ok := NOT sisy_overloaded_v1(
        (figures ->> 'due')::integer, (figures ->> 'not_run')::integer, 0, 0
    );
    subjects := '{}';
    facts := figures;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION sisy_health_v1(interval, interval, interval) IS
    'What is wrong with sisy now (version 1 of sisy_health): one row per check, check_name, '
    'with ok, subjects and facts. p_stalled_after: a worker silent longer is dead; '
    'p_max_overdue: how late a next run may be; p_recent: the history judged. Operators call '
    'sisy_health, which calls the current version.';

-- The operators' names ---------------------------------------------------------------------
-- What to type at psql, and to write in scripts and probes (docs/sql.md):
-- sisy_run_now, sisy_pause, sisy_resume, sisy_clear_error, sisy_backfill,
-- sisy_health and sisy_metrics. Each calls the current version of its
-- function, with the same arguments, defaults and result (a test keeps them
-- equal); a release that adds a version points the name at it (CREATE OR
-- REPLACE FUNCTION, with its COMMENT, in a new migration) and changes nothing
-- else. SECURITY DEFINER, as the functions they call: EXECUTE on a name is
-- all a role needs (sql/roles.sql), and that grant outlives a change of
-- version. Last in this file: a LANGUAGE sql function needs the functions it
-- calls when it is created.

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

-- Privileges ----------------------------------------------------------------------------
-- No sisy function is everyone's to call: EXECUTE is revoked from PUBLIC on
-- all of them. The owner keeps every right; sql/roles.sql grants the worker,
-- operator and monitor roles what each needs (docs/security.md).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_proc AS p
          JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname = current_schema()
           AND p.proname LIKE 'sisy\_%'
         ORDER BY p.oid
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END;
$$;
