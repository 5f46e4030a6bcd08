from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, cast

from django.contrib import admin, messages
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from .forms import TaskForm
from .models import NOT_RUNNABLE_MESSAGES, Task, TaskQuerySet, TaskRun

if TYPE_CHECKING:
    from typing import TypedDict

    from django_stubs_ext import WithAnnotations

    class _RunAnnotations(TypedDict):
        duration_value: dt.timedelta | None

    # A TaskRun from TaskRunAdmin.get_queryset().
    _AnnotatedRun = WithAnnotations[TaskRun, _RunAnnotations]

    # ModelAdmin is generic only in the stubs: it cannot be subscripted at run time.
    _TaskAdminBase = admin.ModelAdmin[Task]
    _TaskRunAdminBase = admin.ModelAdmin[TaskRun]
else:
    _TaskAdminBase = _TaskRunAdminBase = admin.ModelAdmin


@admin.register(Task)
class TaskAdmin(_TaskAdminBase):
    form = TaskForm
    list_display = (
        "label",
        "schedule",
        "timezone",
        "enabled",
        "state_display",
        "next_run",
        "last_run",
        "last_outcome_display",
        "fire_count",
    )
    list_filter = ("enabled", "allow_overlap", "timezone")
    search_fields = ("label", "schedule")
    readonly_fields = (
        "next_run",
        "last_run",
        "fire_count",
        "finished_at",
        "error",
        "created_at",
        "modified_at",
        "history",
    )
    fieldsets = (
        (None, {"fields": ("label", "callable_path", "pk_override", "userdata")}),
        (
            "Schedule",
            {
                "fields": (
                    "schedule",
                    "timezone",
                    "enabled",
                    "start_running",
                    "end_running",
                    "iterations",
                    "wait_for_schedule",
                    "allow_overlap",
                    "options",
                )
            },
        ),
        (
            "State",
            {
                "fields": (
                    "next_run",
                    "last_run",
                    "fire_count",
                    "finished_at",
                    "error",
                    "created_at",
                    "modified_at",
                    "history",
                )
            },
        ),
    )
    actions = ("run_now", "enable", "disable")

    def get_queryset(self, request: HttpRequest) -> TaskQuerySet:
        # Task's default manager is TaskQuerySet.as_manager(): its querysets are TaskQuerySets.
        return cast(TaskQuerySet, super().get_queryset(request)).with_status()

    @admin.display(description="state")
    def state_display(self, task: Task) -> str:
        if task.broken:
            # Why it cannot run, where the list shows it (the full text is on its page).
            return f"broken: {task.error[:80]}"
        return task.state

    @admin.display(description="last outcome", ordering="last_status")
    def last_outcome_display(self, task: Task) -> str:
        return task.last_outcome or "-"

    @admin.display(description="run history")
    def history(self, task: Task) -> str:
        if not task.pk:
            return "-"
        url = f"../../taskrun/?task__id__exact={task.pk}"
        return format_html('<a href="{}">{} run(s)</a>', url, task.runs.count())

    # Each action changes the tasks: it needs the "change task" permission
    # (a staff user who may only view or add tasks does not see them, and a
    # forged POST is refused by Django).
    @admin.action(
        description="Run selected tasks now (once, then as scheduled)", permissions=["change"]
    )
    def run_now(self, request: HttpRequest, queryset: TaskQuerySet) -> None:
        count = queryset.run_now()
        self.message_user(request, f"{count} task(s) will run now.", messages.SUCCESS)
        not_run: dict[str, list[str]] = {}
        for task in queryset.not_runnable():
            reason = task.not_runnable_reason()
            # not_runnable() rows are finished or disabled, so they have a reason.
            assert reason is not None
            not_run.setdefault(reason, []).append(str(task))
        for reason, tasks in not_run.items():
            self.message_user(
                request,
                f"{len(tasks)} task(s) not run, {NOT_RUNNABLE_MESSAGES[reason]}: {', '.join(tasks)}",
                messages.WARNING,
            )

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: TaskQuerySet) -> None:
        count = queryset.filter(enabled=False).update(enabled=True)
        self.message_user(request, f"{count} task(s) enabled.", messages.SUCCESS)

    @admin.action(
        description="Disable selected tasks (cancels their pending runs)", permissions=["change"]
    )
    def disable(self, request: HttpRequest, queryset: TaskQuerySet) -> None:
        count = queryset.filter(enabled=True).update(enabled=False)
        self.message_user(request, f"{count} task(s) disabled.", messages.SUCCESS)


@admin.register(TaskRun)
class TaskRunAdmin(_TaskRunAdminBase):
    list_display = ("task", "scheduled_for", "status", "lag_ms", "duration", "worker", "job_id")
    list_filter = ("status",)
    list_select_related = ("task",)
    search_fields = ("task__label", "error")
    date_hierarchy = "scheduled_for"
    readonly_fields = [field.name for field in TaskRun._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRun]:
        queryset: QuerySet[TaskRun] = (
            super()
            .get_queryset(request)
            .annotate(duration_value=F("finished_at") - F("started_at"))
        )
        return queryset

    @admin.display(description="lag (ms)")
    def lag_ms(self, run: TaskRun) -> str:
        return "-" if run.lag is None else f"{run.lag.total_seconds() * 1000:.1f}"

    @admin.display(description="duration", ordering="duration_value")
    def duration(self, run: _AnnotatedRun) -> dt.timedelta | None:
        return run.duration_value

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TaskRun | None = None) -> bool:
        return False
