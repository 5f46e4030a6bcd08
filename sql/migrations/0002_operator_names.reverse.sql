-- Undoes 0002_operator_names.sql (unapplying the Django migration
-- sisy.0002_operator_names). Frozen with it. A dropped function takes its
-- description with it; 0001_initial described nothing, so every other
-- description of a sisy function or view is this migration's, and goes.
DROP FUNCTION sisy_metrics(interval);
DROP FUNCTION sisy_health(interval, interval, interval);
DROP FUNCTION sisy_backfill(text, timestamptz, timestamptz, integer);
DROP FUNCTION sisy_clear_error(text);
DROP FUNCTION sisy_resume(text);
DROP FUNCTION sisy_pause(text, text, timestamptz);
DROP FUNCTION sisy_run_now(text);
DO $$
DECLARE
    described record;
BEGIN
    FOR described IN
        SELECT 'FUNCTION' AS kind, p.oid::regprocedure::text AS name
          FROM pg_proc AS p
         WHERE p.pronamespace = current_schema()::regnamespace
           AND p.proname LIKE 'sisy\_%' AND obj_description(p.oid, 'pg_proc') IS NOT NULL
        UNION ALL
        SELECT 'VIEW', c.oid::regclass::text
          FROM pg_class AS c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'v'
           AND c.relname LIKE 'sisy\_%' AND obj_description(c.oid, 'pg_class') IS NOT NULL
         ORDER BY 1, 2
    LOOP
        EXECUTE format('COMMENT ON %s %s IS NULL', described.kind, described.name);
    END LOOP;
END;
$$;
