"""sisy-pg's first schema: sql/migrations/0001_initial.sql, and the models' state.

The SQL files are the schema: the database operations apply the SQL
migration file of the same name, and the state operations tell Django what
those tables are (a test checks they match what Django would create).

Sisy users' data migrations depend on ('sisy', '0001_initial') and save the
real Task model, so the columns the models map are frozen here (see the
upgrade rule, docs/concepts.md#the-upgrade-rule).
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import sisy_pg.conf
import sisy_pg.limits
from sisy_pg.migration_utils import RunSisySQL


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        # The SQL defers and cancels procrastinate jobs (see its section
        # "The seam to procrastinate").
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[RunSisySQL("0001_initial")],
            state_operations=[
                migrations.CreateModel(
                    name="Task",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "label",
                            models.CharField(
                                blank=True,
                                help_text="Unique. Defaults to the callable's dotted path.",
                                max_length=255,
                                unique=True,
                            ),
                        ),
                        (
                            "callable_info",
                            models.JSONField(
                                decoder=sisy_pg.limits.JSONDecoder,
                                help_text="Description of the callable (see taskinfo_with_label).",
                            ),
                        ),
                        (
                            "schedule",
                            models.CharField(
                                default=sisy_pg.conf.default_schedule,
                                help_text="Cron: minute hour day-of-month month day-of-week [second].",
                                max_length=255,
                            ),
                        ),
                        (
                            "timezone",
                            models.CharField(
                                default=sisy_pg.conf.default_timezone,
                                help_text="IANA time zone the schedule is read in.",
                                max_length=64,
                            ),
                        ),
                        ("enabled", models.BooleanField(default=True)),
                        (
                            "start_running",
                            models.DateTimeField(
                                blank=True, help_text="First eligible instant.", null=True
                            ),
                        ),
                        (
                            "end_running",
                            models.DateTimeField(
                                blank=True, help_text="Last eligible instant.", null=True
                            ),
                        ),
                        (
                            "iterations",
                            models.PositiveIntegerField(
                                default=0,
                                help_text="Number of runs, then the task ends (0: forever).",
                            ),
                        ),
                        (
                            "wait_for_schedule",
                            models.BooleanField(
                                default=True,
                                help_text="Off: run once as soon as the task is created, then follow the schedule.",
                            ),
                        ),
                        (
                            "allow_overlap",
                            models.BooleanField(
                                default=True,
                                help_text="Off: a fire that would overlap a running run is skipped.",
                            ),
                        ),
                        (
                            "userdata",
                            models.JSONField(
                                blank=True, decoder=sisy_pg.limits.JSONDecoder, default=dict
                            ),
                        ),
                        (
                            "options",
                            models.JSONField(
                                blank=True,
                                decoder=sisy_pg.limits.JSONDecoder,
                                default=dict,
                                help_text='Policies, e.g. {"missed": "skip", "grace": 30, '
                                '"overlap": "buffer_one", "timeout": 600, "retries": 3, '
                                '"retry_delay": 10, "priority": 5}.',
                            ),
                        ),
                        ("next_run", models.DateTimeField(blank=True, editable=False, null=True)),
                        (
                            "last_run",
                            models.DateTimeField(
                                blank=True,
                                editable=False,
                                help_text="Instant of the latest fire.",
                                null=True,
                            ),
                        ),
                        ("fire_count", models.PositiveIntegerField(default=0, editable=False)),
                        (
                            "finished_at",
                            models.DateTimeField(blank=True, editable=False, null=True),
                        ),
                        (
                            "error",
                            models.TextField(
                                blank=True,
                                default="",
                                editable=False,
                                help_text="Why the task cannot run (it is broken); "
                                "cleared when its definition changes.",
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("modified_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "ordering": ("label", "id"),
                    },
                ),
                migrations.CreateModel(
                    name="TaskRun",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "scheduled_for",
                            models.DateTimeField(help_text="The instant this run is for."),
                        ),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("queued", "Queued"),
                                    ("running", "Running"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                    ("timed_out", "Timed out"),
                                    ("skipped", "Skipped"),
                                    ("missed", "Missed"),
                                    ("cancelled", "Cancelled"),
                                ],
                                default="queued",
                                max_length=16,
                            ),
                        ),
                        ("queued_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("error", models.TextField(blank=True, default="")),
                        ("traceback", models.TextField(blank=True, default="")),
                        (
                            "job_id",
                            models.BigIntegerField(
                                blank=True, help_text="procrastinate job id", null=True
                            ),
                        ),
                        ("worker", models.CharField(blank=True, default="", max_length=255)),
                        (
                            "details",
                            models.JSONField(
                                blank=True,
                                decoder=sisy_pg.limits.JSONDecoder,
                                default=dict,
                                editable=False,
                            ),
                        ),
                        (
                            "task",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="runs",
                                to="sisy.task",
                            ),
                        ),
                    ],
                    options={
                        "ordering": ("-scheduled_for", "-id"),
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("task", "scheduled_for"),
                                name="sisy_taskrun_once_per_instant",
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
