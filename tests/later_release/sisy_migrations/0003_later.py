"""A later sisy migration that follows the upgrade rule, after the real head.

It adds what a later release may add -- a versioned function beside the old
ones, a constraint on a key of ``sisy_task.options``, a column of
``sisy_taskrun`` the TaskRun model does not map (with a default, so the
model's INSERTs still work), an index, a view -- and no column the Task or
TaskRun models map: a Sisy data migration that depends on
``('sisy', '0001_initial')`` only may save the real Task model before this
migration has run. Nothing changes the models' state.
"""

from django.db import migrations

FORWARD = [
    (
        """
        CREATE FUNCTION sisy_example_v2(p_options jsonb) RETURNS numeric
            LANGUAGE sql IMMUTABLE
        AS $$ SELECT (p_options ->> 'timeout')::numeric $$
        """,
        "DROP FUNCTION sisy_example_v2(jsonb)",
    ),
    (
        # Rows written before this migration (by seed migrations) must pass it.
        """
        ALTER TABLE sisy_task ADD CONSTRAINT sisy_task_options_timeout_is_number CHECK (
            options -> 'timeout' IS NULL OR jsonb_typeof(options -> 'timeout') = 'number'
        )
        """,
        "ALTER TABLE sisy_task DROP CONSTRAINT sisy_task_options_timeout_is_number",
    ),
    (
        "ALTER TABLE sisy_taskrun ADD COLUMN attempt integer NOT NULL DEFAULT 1",
        "ALTER TABLE sisy_taskrun DROP COLUMN attempt",
    ),
    (
        "CREATE INDEX sisy_taskrun_retried_idx ON sisy_taskrun (task_id, attempt) WHERE attempt > 1",
        "DROP INDEX sisy_taskrun_retried_idx",
    ),
    (
        """
        CREATE VIEW sisy_task_timeouts AS
        SELECT t.id, t.label, sisy_example_v2(t.options) AS timeout FROM sisy_task AS t
        """,
        "DROP VIEW sisy_task_timeouts",
    ),
]


class Migration(migrations.Migration):
    dependencies = [("sisy", "0002_operator_names")]

    operations = [migrations.RunSQL(sql, reverse_sql=reverse) for sql, reverse in FORWARD]
