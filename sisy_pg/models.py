"""Sisy's public models and helpers: ``Task``, ``TaskRun``, ``task_with_callable``.

The task row is the schedule: ``next_run`` is the next instant it fires, kept by
the worker's planner and by the triggers in ``sql/schema.sql``, so that a change
made by any writer (ORM, admin, migration, psql) is obeyed at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from . import callables, conf, schedule


class TaskDefinitionError(ValidationError, ValueError):
    """An invalid task: a ``ValidationError`` for forms, a ``ValueError`` for Sisy code."""


def _validate_userdata(userdata: Any) -> dict:
    if userdata is None:
        return {}
    if not isinstance(userdata, dict):
        raise ValueError(f"userdata must be a dict, not {type(userdata).__name__}")
    return userdata


def _validate_future(when: dt.datetime | None, name: str) -> None:
    if when is None:
        return
    if not isinstance(when, dt.datetime) or timezone.is_naive(when):
        raise ValueError(f"{name} must be an aware datetime")
    if when <= timezone.now():
        raise ValueError(f"{name} must be in the future (got {when.isoformat()})")


class TaskQuerySet(models.QuerySet):
    def with_status(self) -> TaskQuerySet:
        """Annotate ``is_running`` and ``last_status`` in one query (admin, status command)."""
        runs = TaskRun.objects.filter(task=OuterRef("pk"))
        return self.annotate(
            is_running=Exists(runs.filter(status=TaskRun.Status.RUNNING)),
            last_status=Subquery(
                runs.filter(status__in=TaskRun.FINAL_STATUSES)
                .order_by("-scheduled_for")
                .values("status")[:1]
            ),
        )


class Task(models.Model):
    """A recurring task: a stored callable, a cron schedule and its state."""

    label = models.CharField(
        max_length=255, blank=True, help_text="Defaults to the callable's dotted path."
    )
    callable_info = models.JSONField(
        help_text="Description of the callable (see taskinfo_with_label)."
    )
    schedule = models.CharField(
        max_length=255,
        default=conf.default_schedule,
        help_text="Cron: minute hour day-of-month month day-of-week [second].",
    )
    timezone = models.CharField(
        max_length=64,
        default=conf.default_timezone,
        help_text="IANA time zone the schedule is read in.",
    )
    enabled = models.BooleanField(default=True)
    start_running = models.DateTimeField(null=True, blank=True, help_text="First eligible instant.")
    end_running = models.DateTimeField(null=True, blank=True, help_text="Last eligible instant.")
    iterations = models.PositiveIntegerField(
        default=0, help_text="Number of runs, then the task ends (0: forever)."
    )
    wait_for_schedule = models.BooleanField(
        default=True,
        help_text="Off: run once as soon as the task is created, then follow the schedule.",
    )
    allow_overlap = models.BooleanField(
        default=True,
        help_text="Off: a fire that would overlap a running run is skipped.",
    )
    userdata = models.JSONField(default=dict, blank=True)

    # Kept by the planner and the triggers; see sql/schema.sql.
    next_run = models.DateTimeField(null=True, blank=True, editable=False)
    last_run = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Instant of the latest fire."
    )
    fire_count = models.PositiveIntegerField(default=0, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    schedule_error = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ("label", "id")

    def __str__(self) -> str:
        return self.label

    def save(self, *args: Any, **kwargs: Any) -> None:
        errors = self.definition_errors()
        if errors:
            raise TaskDefinitionError(errors)
        if self._state.adding and self.next_run is None and self.enabled:
            # Planned here so the new row shows its next run at once; rows
            # written without it (bulk_create, SQL) are planned by a worker.
            plan = schedule.plan_from_now(self.plan_input(), timezone.now())
            self.next_run = plan.next_run
        super().save(*args, **kwargs)

    # --- Sisy's constructors -------------------------------------------------

    @classmethod
    def run_iterations(
        cls,
        the_callable: Any,
        iterations: int = 1,
        label: str | None = None,
        schedule: str = "* * * * * *",
        userdata: dict | None = None,
        run_immediately: bool = False,
        delay_until: dt.datetime | None = None,
        pk_override: Any = None,
    ) -> Task:
        """Create and save a task that runs ``iterations`` times, then finishes."""
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer (got {iterations!r})")
        _validate_future(delay_until, "delay_until")
        task = task_with_callable(
            the_callable,
            label=label,
            schedule=schedule,
            userdata=userdata,
            pk_override=pk_override,
        )
        task.iterations = iterations
        task.wait_for_schedule = not run_immediately
        task.start_running = delay_until
        task.save()
        return task

    @classmethod
    def run_once(
        cls,
        the_callable: Any,
        userdata: dict | None = None,
        delay_until: dt.datetime | None = None,
        pk_override: Any = None,
    ) -> Task:
        """Create and save a task that runs once: now, or at ``delay_until``."""
        return cls.run_iterations(
            the_callable,
            iterations=1,
            userdata=userdata,
            run_immediately=True,
            delay_until=delay_until,
            pk_override=pk_override,
        )

    # --- state shown to users ------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def running(self) -> bool:
        """Whether a run of this task is executing now."""
        annotated = getattr(self, "is_running", None)
        if annotated is not None:
            return annotated
        return self.runs.filter(status=TaskRun.Status.RUNNING).exists()

    @property
    def last_outcome(self) -> str | None:
        """Status of the latest run that ended (succeeded, failed, skipped, cancelled)."""
        if hasattr(self, "last_status"):
            return self.last_status
        run = self.runs.filter(status__in=TaskRun.FINAL_STATUSES).order_by("-scheduled_for").first()
        return run.status if run else None

    @property
    def callable_path(self) -> str:
        return (self.callable_info or {}).get("func_path", "")

    # --- validation ----------------------------------------------------------

    def definition_errors(self) -> dict[str, str]:
        """Field -> message for every invalid part of the definition."""
        errors: dict[str, str] = {}
        try:
            self.schedule = schedule.validate_schedule(self.schedule)
        except schedule.ScheduleError as exc:
            errors["schedule"] = str(exc)
        try:
            schedule.get_timezone(self.timezone)
        except schedule.ScheduleError as exc:
            errors["timezone"] = str(exc)
        if not isinstance(self.userdata, dict):
            errors["userdata"] = f"userdata must be a dict, not {type(self.userdata).__name__}"
        try:
            callables.validate_info(self.callable_info)
        except callables.CallableError as exc:
            errors["callable_info"] = str(exc)
        for name in ("start_running", "end_running"):
            value = getattr(self, name)
            if value is not None and timezone.is_naive(value):
                errors[name] = f"{name} must be an aware datetime"
        if (
            "start_running" not in errors
            and "end_running" not in errors
            and self.start_running
            and self.end_running
            and self.end_running < self.start_running
        ):
            errors["end_running"] = "end_running is before start_running"
        if not isinstance(self.iterations, int) or self.iterations < 0:
            errors["iterations"] = "iterations must be 0 (forever) or a positive integer"
        if not self.label:
            self.label = self.callable_path
        return errors

    def clean(self) -> None:
        errors = self.definition_errors()
        if "callable_info" in errors:
            # Not a form field: forms (see forms.TaskForm) check the callable
            # themselves; a missing one is reported by them, not twice.
            message = errors.pop("callable_info")
            if self.callable_info is not None:
                errors[NON_FIELD_ERRORS] = message
        if errors:
            raise ValidationError(errors)

    def plan_input(self) -> schedule.PlanInput:
        return schedule.PlanInput(
            schedule=self.schedule,
            timezone=self.timezone,
            start_running=self.start_running,
            end_running=self.end_running,
            iterations=self.iterations,
            fire_count=self.fire_count,
            wait_for_schedule=self.wait_for_schedule,
        )


class TaskRun(models.Model):
    """One fire of a task: exactly one row per (task, scheduled instant)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"
        CANCELLED = "cancelled"

    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.CANCELLED)

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    scheduled_for = models.DateTimeField(help_text="The instant this run is for.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    job_id = models.BigIntegerField(null=True, blank=True, help_text="procrastinate job id")
    worker = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ("-scheduled_for", "-id")
        constraints = [
            # What makes each (task, instant) run exactly once, whatever
            # the number of workers.
            models.UniqueConstraint(
                fields=["task", "scheduled_for"], name="sisy_taskrun_once_per_instant"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} @ {self.scheduled_for.isoformat()} ({self.status})"

    @property
    def lag(self) -> dt.timedelta | None:
        """How late the run started compared with its scheduled instant."""
        if self.started_at is None:
            return None
        return self.started_at - self.scheduled_for


def task_with_callable(
    the_callable: Any,
    label: str | None = None,
    schedule: str | None = None,
    userdata: dict | None = None,
    pk_override: Any = None,
) -> Task:
    """Return an unsaved Task for ``the_callable`` (an object or a dotted path).

    Raises ValueError naming the problem for an unknown or unusable callable,
    an invalid schedule or userdata that is not a dict.
    """
    from . import schedule as schedules

    info = callables.describe(the_callable, pk_override=pk_override)
    expression = schedules.validate_schedule(
        conf.settings.DEFAULT_SCHEDULE if schedule is None else schedule
    )
    return Task(
        label=label or info["func_path"],
        callable_info=info,
        schedule=expression,
        userdata=_validate_userdata(userdata),
    )


def taskinfo_with_label(label: str) -> dict[str, Any]:
    """Sisy's lookup: the stored callable description of the task with ``label``."""
    return dict(Task.objects.get(label=label).callable_info)
