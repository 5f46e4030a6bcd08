"""The admin: what runs next, what ran, what failed and why, and buttons to act on it.

Times are shown to the second (every-second schedules must not look alike),
in the admin's current time zone; schedules are described in words and
previewed in the task's own time zone. Pause, resume, run now and clear error
are admin actions (the dropdown) and buttons (each row, each task's page):
one implementation, which says what it did and, task by task, why it did not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.defaultfilters import linebreaksbr
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from . import audit, conf, limits, schedule
from .backfill import Backfill, BackfillError
from .backfill import backfill as backfill_task
from .forms import TaskForm
from .models import (
    PAUSE_NOTE_MAX_LENGTH,
    ActionResult,
    Pause,
    Task,
    TaskQuerySet,
    TaskRun,
    database_now,
)
from .schedule_text import describe, instants_of, seconds_first_warning
from .vocabulary import Action, TaskState

if TYPE_CHECKING:
    from typing import TypedDict

    from django.contrib.admin.options import InlineModelAdmin
    from django_stubs_ext import WithAnnotations

    class _RunAnnotations(TypedDict):
        duration_value: dt.timedelta | None
        lag_value: dt.timedelta | None

    # A TaskRun from TaskRunAdmin.get_queryset().
    _AnnotatedRun = WithAnnotations[TaskRun, _RunAnnotations]

    # Generic only in the stubs: they cannot be subscripted at run time.
    _TaskAdminBase = admin.ModelAdmin[Task]
    _TaskRunAdminBase = admin.ModelAdmin[TaskRun]
    _RunsInlineBase = admin.TabularInline[TaskRun, Task]
    _RunsFormSetBase = BaseInlineFormSet[TaskRun, Task, Any]
else:
    _TaskAdminBase = _TaskRunAdminBase = admin.ModelAdmin
    _RunsInlineBase = admin.TabularInline
    _RunsFormSetBase = BaseInlineFormSet

# How many instants the schedule preview shows, and runs the task's page lists.
PREVIEW_INSTANTS = 5
RECENT_RUNS = 20
# Up to this many tasks, the run list offers a filter listing each of them.
TASK_FILTER_MAX = 200
# Tasks named in one message, at most.
NAMED_TASKS = 10


# --- how values are shown -------------------------------------------------------------


def _relative(value: dt.datetime, now: dt.datetime) -> str:
    """``in 42 s``, ``3 min ago``...: how far ``value`` is from ``now``, roughly."""
    seconds = round((value - now).total_seconds())
    size = abs(seconds)
    if size < 60:
        amount = f"{size} s"
    elif size < 3600:
        amount = f"{size // 60} min"
    elif size < 86400:
        amount = f"{size // 3600} h {size % 3600 // 60} min"
    else:
        amount = f"{size // 86400} d {size % 86400 // 3600} h"
    return f"in {amount}" if seconds > 0 else "now" if seconds == 0 else f"{amount} ago"


def _moment(value: dt.datetime | None, relative: bool = False) -> str:
    """An instant to the second in the current time zone.

    ``relative``: for the list, its date above its time (a narrower column),
    and its distance from now below.
    """
    if value is None:
        return "-"
    local = timezone.localtime(value)
    utc = value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    zone = local.strftime("%Z, UTC%z")
    if not relative:
        return format_html(
            '<time datetime="{}" title="{}">{}</time>',
            utc,
            zone,
            local.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return format_html(
        '<time datetime="{}" title="{}"><span class="sisy-date">{}</span> {}</time>'
        '<div class="sisy-quiet">{}</div>',
        utc,
        zone,
        local.strftime("%Y-%m-%d"),
        local.strftime("%H:%M:%S"),
        _relative(value, timezone.now()),
    )


def _seconds(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if abs(seconds) < 60:
        return f"{seconds:.3f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _badge(kind: str, text: str | None = None) -> str:
    return format_html('<span class="sisy-badge sisy-{}">{}</span>', kind, text or kind)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def _pre(text: str) -> str:
    return format_html('<pre class="sisy-pre">{}</pre>', text) if text else "-"


def _json(value: Any) -> str:
    """A stored JSON document for a page: indented, keys sorted.

    On one line when beyond the limits (a row written before them: the
    indenting encoder recurses), and a notice when too deep to be read at all.
    """
    if isinstance(value, limits.UnreadableJSON):
        return str(value)
    indent = None if limits.json_error("value", value) else 2
    return json.dumps(value, indent=indent, sort_keys=True, default=str)


# --- the schedule preview -------------------------------------------------------------


def schedule_preview(expression: str, zone_name: str) -> dict[str, Any]:
    """What the change form shows under a schedule: words, warning, next instants, errors.

    The same for the JSON view (live, as the schedule is typed) and the page
    (the saved schedule), so both render one template.
    """
    errors: dict[str, str] = {}
    try:
        expression = schedule.validate_schedule(expression)
    except schedule.ScheduleError as exc:
        errors["schedule"] = str(exc)
    try:
        zone = schedule.get_timezone(zone_name)
    except schedule.ScheduleError as exc:
        errors["timezone"] = str(exc)
    preview: dict[str, Any] = {
        "schedule": expression,
        "timezone": zone_name,
        "description": None,
        "warning": None,
        "instants": [],
        "errors": errors,
    }
    if "schedule" not in errors:
        preview["description"] = describe(expression)
        preview["warning"] = seconds_first_warning(expression)
    if not errors:
        instants = instants_of(expression, zone_name, database_now(), PREVIEW_INSTANTS)
        preview["instants"] = [
            {
                "local": instant.astimezone(zone).strftime("%a %Y-%m-%d %H:%M:%S %Z"),
                "utc": instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            }
            for instant in instants
        ]
    return preview


def _render_preview(preview: dict[str, Any]) -> str:
    return render_to_string("admin/sisy/task/schedule_preview.html", {"preview": preview})


# --- filters ----------------------------------------------------------------------------


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(TaskState.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in TaskState.values:
            return queryset
        return cast(TaskQuerySet, queryset).in_state(value)


class LastOutcomeFilter(admin.SimpleListFilter):
    title = "last outcome"
    parameter_name = "outcome"
    NEVER = "none"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        outcomes = [(str(status), status.label.lower()) for status in TaskRun.FINAL_STATUSES]
        return [*outcomes, (self.NEVER, "never ran")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == self.NEVER:
            return queryset.filter(last_status__isnull=True)
        if value in TaskRun.FINAL_STATUSES:
            return queryset.filter(last_status=value)
        return queryset


# --- the runs of a task, on its page --------------------------------------------------


class RecentRunsFormSet(_RunsFormSetBase):
    """The task's latest runs only: a task of every second has thousands."""

    def get_queryset(self) -> QuerySet[TaskRun]:
        if not hasattr(self, "_queryset"):
            self._queryset = super().get_queryset()[:RECENT_RUNS]
        queryset: QuerySet[TaskRun] = self._queryset
        return queryset


def _as_admin(request: HttpRequest) -> contextlib.AbstractContextManager[None]:
    """What a POST changes is recorded as the user's, via "admin" (the audit, docs/audit.md)."""
    if request.method != "POST":
        return contextlib.nullcontext()
    return audit.acting_as(request.user, via="admin")


def _without_nav_sidebar(extra_context: dict[str, Any] | None) -> dict[str, Any]:
    """The list's table needs the width: without the navigation sidebar it fits 1,280 px."""
    return {"is_nav_sidebar_enabled": False, **(extra_context or {})}


class RunDisplays:
    """Columns shared by the run list and the task page's recent runs."""

    @admin.display(description="run")
    def run_link(self, run: TaskRun) -> str:
        url = reverse("admin:sisy_taskrun_change", args=[run.pk])
        return format_html('<a href="{}">Run {}</a>', url, run.pk)

    @admin.display(description="scheduled for", ordering="scheduled_for")
    def scheduled_for_display(self, run: TaskRun) -> str:
        return _moment(run.scheduled_for)

    @admin.display(description="status", ordering="status")
    def status_display(self, run: TaskRun) -> str:
        details = run.details if isinstance(run.details, dict) else {}
        notes = [f"attempt {details['attempt']}"] if details.get("attempt", 1) != 1 else []
        if details.get("reason"):
            notes.append(str(details["reason"]))
        if details.get("task_result_id"):
            notes.append(f"task result {details['task_result_id']}")
        badge = _badge(run.status, run.get_status_display().lower())
        if notes:
            badge += format_html(' <span class="sisy-quiet">{}</span>', ", ".join(notes))
        return badge

    @admin.display(description="lag", ordering="lag_value")
    def lag_display(self, run: TaskRun) -> str:
        return _seconds(run.lag)

    @admin.display(description="duration", ordering="duration_value")
    def duration_display(self, run: TaskRun) -> str:
        if run.started_at is None or run.finished_at is None:
            return "-"
        return _seconds(run.finished_at - run.started_at)

    @admin.display(description="error")
    def error_line(self, run: TaskRun) -> str:
        line = _first_line(run.error)
        return format_html('<span title="{}">{}</span>', run.error, line[:100]) if line else "-"


class RecentRunsInline(RunDisplays, _RunsInlineBase):
    model = TaskRun
    formset = RecentRunsFormSet
    verbose_name_plural = f"last {RECENT_RUNS} runs"
    fields = readonly_fields = (
        "run_link",
        "scheduled_for_display",
        "status_display",
        "lag_display",
        "duration_display",
        "error_line",
    )
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Task | None = None) -> bool:
        return False


# --- tasks --------------------------------------------------------------------------------

# What the buttons say, and what they do (their title).
BUTTONS = {
    Action.RUN_NOW: ("Run now", "Run it once now, then as scheduled"),
    Action.PAUSE: ("Pause", "Stop firing it; its waiting runs are cancelled"),
    Action.RESUME: ("Resume", "Fire it as scheduled again"),
    Action.CLEAR_ERROR: ("Clear error", "Forget why it broke: a worker's planner tries it again"),
}
# What a message says was done, and how it says a task was not.
_DONE = {
    Action.RUN_NOW: "will run now.",
    Action.PAUSE: "paused: their waiting runs are cancelled.",
    Action.RESUME: "resumed: a worker's planner plans their next run now.",
    Action.CLEAR_ERROR: "cleared of their error: a worker's planner plans them again "
    "(they break again at their next run if the cause remains).",
}
_NOT_DONE = {
    Action.RUN_NOW: "run",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.CLEAR_ERROR: "cleared",
}
# The History page's words for what a button or action did.
_LOGGED = {
    Action.RUN_NOW: "Ran now",
    Action.PAUSE: "Paused",
    Action.RESUME: "Resumed",
    Action.CLEAR_ERROR: "Cleared its error",
}


# An instant to the second, in the browser's date and time picker (the current time zone's).
INSTANT_INPUT = forms.DateTimeInput(
    attrs={"type": "datetime-local", "step": 1}, format="%Y-%m-%dT%H:%M:%S"
)


class PauseForm(forms.Form):
    """A pause's note and end: the action "Pause with a note or an end", a task's pause page."""

    note = forms.CharField(
        required=False,
        max_length=PAUSE_NOTE_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why it is paused: shown wherever its state is.",
    )
    until = forms.DateTimeField(required=False, widget=INSTANT_INPUT)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["until"].help_text = (
            f"In {timezone.get_current_timezone_name()}: a worker's planner resumes it then, "
            "by itself. Empty: it stays paused until someone resumes it."
        )

    def clean_until(self) -> dt.datetime | None:
        until: dt.datetime | None = self.cleaned_data["until"]
        # The database's clock decides (sisy_pause_tasks_v1 checks it again).
        if until is not None and until <= database_now():
            raise forms.ValidationError("This is past: a pause ends in the future.")
        return until

    def pause(self) -> dict[str, Any]:
        """``TaskQuerySet.act``'s arguments."""
        return {"note": self.cleaned_data["note"], "until": self.cleaned_data["until"]}


class BackfillForm(forms.Form):
    """The range of the action "Backfill past instants": each instant in it runs once."""

    start = forms.DateTimeField(widget=INSTANT_INPUT)
    end = forms.DateTimeField(
        required=False,
        widget=INSTANT_INPUT,
        help_text="Included. Empty, or later than now: now (the instants to come are the "
        "schedule's).",
    )
    limit = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="The most instants one task's backfill may run (default and most: "
        "SISY_BACKFILL_LIMIT); a longer range is refused.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["start"].help_text = (
            f"In {timezone.get_current_timezone_name()}. Instants of each task's schedule from "
            "then on run once each, one at a time, oldest first; those that ran are not run "
            "again."
        )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        now = database_now()  # the database's clock decides (sisy_request_backfill_v1 too)
        if start is not None and start > now:
            self.add_error("start", "This is to come: a backfill runs past instants.")
        elif start is not None and end is not None and start > end:
            self.add_error("end", "The end is before the start.")
        cleaned["end"] = now if end is None or end > now else end
        return cleaned


def _pause_lines(pause: Pause, full: bool = False) -> str:
    """Until when and why a task is paused: under its state in the list, in full on its page."""
    until = (
        format_html("until {} ({})", _moment(pause.until), _relative(pause.until, timezone.now()))
        if pause.until
        else "until resumed"
    )
    note = linebreaksbr(pause.note) if full else _first_line(pause.note)[:120]
    lines = format_html('<div class="sisy-quiet">{}</div>', until)
    if note:
        lines += format_html(
            '<div class="sisy-words sisy-pause-note" title="{}">{}</div>', pause.note, note
        )
    if full:
        lines += format_html(
            '<div class="sisy-quiet">paused {} by {}</div>',
            _moment(pause.paused_at),
            pause.paused_by,
        )
    return lines


def offered_buttons(task: Task) -> list[Action]:
    """The buttons a task shows: run now always (it says why not), the others when they apply."""
    state = task.state
    offered = [Action.RUN_NOW]
    if state != TaskState.FINISHED:
        offered.append(Action.RESUME if not task.enabled else Action.PAUSE)
    if state == TaskState.BROKEN:
        offered.append(Action.CLEAR_ERROR)
    return offered


@admin.register(Task)
class TaskAdmin(_TaskAdminBase):
    form = TaskForm
    list_display = (
        "label_display",
        "state_display",
        "schedule_display",
        "next_run_display",
        "last_run_display",
        "last_outcome_display",
    )
    list_filter = (StateFilter, LastOutcomeFilter, "enabled")
    search_fields = ("label", "callable_info__func_path")
    readonly_fields = (
        "schedule_preview",
        "state_display",
        "next_run_display",
        "last_run_display",
        "last_outcome_display",
        "fire_count",
        "finished_at_display",
        "error_display",
        "created_at_display",
        "modified_at_display",
        "changes_display",
        "pause_display",
    )
    fieldsets = (
        (None, {"fields": ("label", "callable_path", "pk_override", "task_using", "userdata")}),
        (
            "Schedule",
            {
                "fields": (
                    "schedule",
                    "timezone",
                    "schedule_preview",
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
                    "state_display",
                    "pause_display",
                    "error_display",
                    "next_run_display",
                    "last_run_display",
                    "last_outcome_display",
                    "fire_count",
                    "finished_at_display",
                    "created_at_display",
                    "modified_at_display",
                )
            },
        ),
    )
    actions = ("run_now", "pause", "pause_with_note", "resume", "clear_error", "backfill")

    class Media:
        css = {"all": ("sisy/admin.css",)}
        js = ("sisy/schedule_preview.js",)

    def get_fieldsets(self, request: HttpRequest, obj: Task | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        # A task being added has no state yet, nor changes.
        if obj is None:
            return [f for f in fieldsets if f[0] != "State"]
        return [*fieldsets, ("Changes", {"fields": ("changes_display",)})]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        with _as_admin(request):  # its actions, and list_editable
            return super().changelist_view(request, _without_nav_sidebar(extra_context))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        with _as_admin(request):
            return super().changeform_view(request, object_id, form_url, extra_context)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        with _as_admin(request):
            return super().delete_view(request, object_id, extra_context)

    def get_queryset(self, request: HttpRequest) -> TaskQuerySet:
        # Task's default manager is TaskQuerySet.as_manager(): its querysets are TaskQuerySets.
        return cast(TaskQuerySet, super().get_queryset(request)).with_status()

    def get_inlines(
        self, request: HttpRequest, obj: Task | None
    ) -> list[type[InlineModelAdmin[Any, Any]]]:
        return [] if obj is None else [RecentRunsInline]

    def get_list_display(self, request: HttpRequest) -> Any:
        columns: list[str | Callable[[Task], str | bool]] = list(super().get_list_display(request))
        if self.has_change_permission(request):
            # A closure: each row's buttons come back to this page (its filters kept).
            @admin.display(description="actions")
            def buttons(task: Task) -> str:
                return format_html_join(
                    "",
                    '<button type="submit" class="sisy-button" formaction="{}" title="{}">'
                    "{}</button>",
                    (
                        (self._button_url(task, action, request), title, label)
                        for action, (label, title) in self._buttons(task)
                    ),
                )

            columns.append(buttons)
        return columns

    # --- columns and fields ---

    @admin.display(description="label", ordering="label")
    def label_display(self, task: Task) -> str:
        return format_html('{}<div class="sisy-quiet">{}</div>', task.label, task.callable_path)

    @admin.display(description="state")
    def state_display(self, task: Task) -> str:
        state = task.state
        text = _badge(state, state.label)
        if state == TaskState.BROKEN and not task.enabled:
            text = format_html("{} {}", text, _badge("paused"))
        pause = task.pause_info
        if pause is not None:
            text += _pause_lines(pause)
        if task.broken:
            # Why it cannot run, where the list shows it (the whole text on its page).
            text += format_html(
                '<div class="sisy-reason" title="{}">{}</div>',
                task.error,
                _first_line(task.error)[:120],
            )
        return text

    @admin.display(description="pause")
    def pause_display(self, task: Task) -> str:
        pause = task.pause_info
        if pause is not None:
            return _pause_lines(pause, full=True)
        if not task.enabled and not task.finished:
            return "paused, without a note or an end"
        return "-"

    @admin.display(description="schedule", ordering="schedule")
    def schedule_display(self, task: Task) -> str:
        return format_html(
            '<code class="sisy-cron">{}</code> <span class="sisy-quiet">{}</span>'
            '<div class="sisy-words">{}</div>',
            task.schedule,
            task.timezone,
            describe(task.schedule),
        )

    @admin.display(description="next run", ordering="next_run")
    def next_run_display(self, task: Task) -> str:
        return _moment(task.next_run, relative=True)

    @admin.display(description="last run", ordering="last_run")
    def last_run_display(self, task: Task) -> str:
        return _moment(task.last_run, relative=True)

    @admin.display(description="last outcome")
    def last_outcome_display(self, task: Task) -> str:
        outcome = task.last_outcome
        return "-" if outcome is None else _badge(outcome, TaskRun.Status(outcome).label.lower())

    @admin.display(description="finished at")
    def finished_at_display(self, task: Task) -> str:
        return _moment(task.finished_at)

    @admin.display(description="created at")
    def created_at_display(self, task: Task) -> str:
        return _moment(task.created_at)

    @admin.display(description="modified at")
    def modified_at_display(self, task: Task) -> str:
        return _moment(task.modified_at)

    @admin.display(description="error")
    def error_display(self, task: Task) -> str:
        return _pre(task.error)

    @admin.display(description=f"latest {audit.RECENT} (sisy_task_changes)")
    def changes_display(self, task: Task) -> str:
        changes = [] if task.pk is None else audit.recent(task.pk, using=task._state.db)
        if not changes:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((_moment(c.changed_at), c.actor, c.via, c.describe()) for c in changes),
        )
        return format_html(
            '<table class="sisy-changes"><thead><tr><th>when</th><th>who</th><th>via</th>'
            "<th>what</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="in words and next instants")
    def schedule_preview(self, task: Task) -> str:
        preview = schedule_preview(task.schedule, task.timezone)
        return format_html(
            '<div id="sisy-schedule-preview" data-url="{}" aria-live="polite">{}</div>',
            reverse("admin:sisy_task_preview"),
            _render_preview(preview),
        )

    # --- views ---

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "preview/",
                self.admin_site.admin_view(self.preview_view),
                name="sisy_task_preview",
            ),
            path(
                "<path:object_id>/do/<str:action>/",
                self.admin_site.admin_view(self.button_view),
                name="sisy_task_do",
            ),
            path(
                "<path:object_id>/pause/",
                self.admin_site.admin_view(self.pause_view),
                name="sisy_task_pause",
            ),
            *super().get_urls(),
        ]

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """The schedule preview as JSON (``html``: the fragment the change form shows)."""
        if not (self.has_view_or_change_permission(request) or self.has_add_permission(request)):
            return JsonResponse({"error": "not allowed: you may not see tasks"}, status=403)
        zone_name = request.GET.get("timezone") or conf.settings.default_timezone
        preview = schedule_preview(request.GET.get("schedule", ""), zone_name)
        status = 400 if preview["errors"] else 200
        return JsonResponse({**preview, "html": _render_preview(preview)}, status=status)

    def button_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """A button of a row or of a task's page: the action on that one task."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if action not in Action.values:
            raise Http404(f"no action {action!r}")
        task = self.get_object(request, unquote(object_id))
        back = request.GET.get("next", "")
        if not url_has_allowed_host_and_scheme(
            back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            back = reverse("admin:sisy_task_changelist")
        if task is None:
            self.message_user(request, f"No task with id {object_id!r}.", messages.ERROR)
        elif not self.has_change_permission(request, task):
            self.message_user(
                request,
                f"Not allowed: you may not change tasks, so {task} was not "
                f"{_NOT_DONE[Action(action)]}.",
                messages.ERROR,
            )
        else:
            with _as_admin(request):
                self._act(
                    request,
                    self.get_queryset(request).filter(pk=task.pk),
                    Action(action),
                    "button",
                )
        return HttpResponseRedirect(back)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        task = self.get_object(request, unquote(object_id))
        if task is not None and self.has_change_permission(request, task):
            page = request.get_full_path()
            buttons = [
                {
                    "label": label,
                    "title": title,
                    "url": reverse("admin:sisy_task_do", args=[task.pk, action])
                    + "?"
                    + urlencode({"next": page}),
                }
                for action, (label, title) in self._buttons(task)
            ]
            extra_context = {**(extra_context or {}), "sisy_buttons": buttons}
            if task.state != TaskState.FINISHED:
                extra_context["sisy_pause"] = {
                    "url": reverse("admin:sisy_task_pause", args=[task.pk]),
                    "label": "Pause with a note…" if task.enabled else "Pause note and end…",
                }
        return super().change_view(request, object_id, form_url, extra_context)

    def pause_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A task's pause page: pause it with a note and an end, or change its pause's."""
        task = self.get_object(request, unquote(object_id))
        if task is None:
            raise Http404(f"no task with id {object_id!r}")
        if not self.has_change_permission(request, task):
            raise PermissionDenied
        if request.method == "POST":
            form = PauseForm(request.POST)
            if form.is_valid():
                with _as_admin(request):
                    self._act(
                        request,
                        self.get_queryset(request).filter(pk=task.pk),
                        Action.PAUSE,
                        "pause page",
                        **form.pause(),
                    )
                return HttpResponseRedirect(reverse("admin:sisy_task_change", args=[task.pk]))
        else:
            pause = task.pause_info
            form = PauseForm(initial={"note": pause.note, "until": pause.until} if pause else None)
        return self._pause_page(request, form, [task])

    def _pause_page(
        self, request: HttpRequest, form: PauseForm, tasks: list[Task], action: str = ""
    ) -> TemplateResponse:
        """The pause form, for one task's page or for the tasks an action selected."""
        return self._tasks_form_page(request, form, tasks, "Pause", action)

    def _tasks_form_page(
        self, request: HttpRequest, form: forms.Form, tasks: list[Task], verb: str, action: str
    ) -> TemplateResponse:
        """A form about ``tasks`` (admin/sisy/task/tasks_form.html): to pause, to backfill."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{verb} {tasks[0]}" if len(tasks) == 1 else f"{verb} {len(tasks)} tasks",
            "verb": verb,
            "tasks": tasks,
            "form": form,
            "action": action,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, f"admin/sisy/task/{verb.lower()}.html", context)

    def save_model(self, request: HttpRequest, obj: Task, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        warning = seconds_first_warning(obj.schedule)
        if warning:
            self.message_user(request, warning, messages.WARNING)

    def _buttons(self, task: Task) -> Iterable[tuple[str, tuple[str, str]]]:
        return ((action, BUTTONS[action]) for action in offered_buttons(task))

    def _button_url(self, task: Task, action: str, request: HttpRequest) -> str:
        url = reverse("admin:sisy_task_do", args=[task.pk, action])
        return url + "?" + urlencode({"next": request.get_full_path()})

    # --- actions: the dropdown and the buttons ---
    # Each changes the tasks: it needs the "change task" permission (a staff
    # user who may only view or add tasks does not see them, and a forged
    # POST is refused by Django or by button_view).

    def _act(
        self,
        request: HttpRequest,
        queryset: QuerySet[Task],
        action: Action,
        via: str,
        **pause: Any,
    ) -> None:
        """Do ``action`` to the tasks (``TaskQuerySet.act``: the database decides, task by
        task); say how many were done and why the others were not, and log each in its
        History (who, what, and why not). ``pause``: a pause's note and end."""
        tasks = {task.pk: task for task in queryset}
        on = Task.objects.using(queryset.db)
        try:
            acted = {r.task_id: r for r in on.filter(pk__in=list(tasks)).act(action, **pause)}
        except ValueError as exc:  # an end past by the time the database saw it
            self.message_user(request, f"Nothing {_NOT_DONE[action]}: {exc}", messages.ERROR)
            return
        # In the order of the page's rows; a task deleted meanwhile is left out.
        results = [acted[pk] for pk in tasks if pk in acted]
        done = [result for result in results if result.done]
        if done:
            self.message_user(request, f"{len(done)} task(s) {_DONE[action]}", messages.SUCCESS)
        refused: dict[str, list[ActionResult]] = {}
        for result in results:
            if result.refusal is not None:
                refused.setdefault(result.refusal.label, []).append(result)
        for reason, group in refused.items():
            names = ", ".join(str(tasks[result.task_id]) for result in group[:NAMED_TASKS])
            if len(group) > NAMED_TASKS:
                names += f" and {len(group) - NAMED_TASKS} more"
            self.message_user(
                request,
                f"{len(group)} task(s) not {_NOT_DONE[action]}, {reason}: {names}",
                messages.WARNING,
            )
        noted = ""
        if pause.get("until"):
            noted += f" until {pause['until'].isoformat(timespec='seconds')}"
        if pause.get("note"):
            noted += f": {pause['note']}"
        for result in results:
            change = f"{_LOGGED[action]} ({via}){noted}"
            if result.refusal is not None:
                change = f"Not {_NOT_DONE[action]} ({via}): it is {result.refusal.label}"
            self.log_change(request, tasks[result.task_id], change)

    @admin.action(description="Run now (once, then as scheduled)", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._act(request, queryset, Action.RUN_NOW, "action")

    @admin.action(description="Pause (their waiting runs are cancelled)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._act(request, queryset, Action.PAUSE, "action")

    @admin.action(description="Pause with a note or an end…", permissions=["change"])
    def pause_with_note(
        self, request: HttpRequest, queryset: QuerySet[Task]
    ) -> TemplateResponse | None:
        """A page asks for the note and the end, then pauses (tasks paused get them too)."""
        form = PauseForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            self._act(request, queryset, Action.PAUSE, "action", **form.pause())
            return None
        return self._pause_page(request, form, list(queryset), action="pause_with_note")

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._act(request, queryset, Action.RESUME, "action")

    @admin.action(description="Clear error (try broken tasks again)", permissions=["change"])
    def clear_error(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._act(request, queryset, Action.CLEAR_ERROR, "action")

    @admin.action(description="Backfill past instants…", permissions=["change"])
    def backfill(self, request: HttpRequest, queryset: QuerySet[Task]) -> TemplateResponse | None:
        """A page asks for the range, then each task's instants in it run once (docs/backfill.md)."""
        form = BackfillForm(request.POST if "apply" in request.POST else None)
        tasks = list(queryset)
        if not form.is_valid():
            return self._tasks_form_page(request, form, tasks, "Backfill", "backfill")
        done: list[Backfill] = []
        for task in tasks:
            try:
                result = backfill_task(
                    task.pk,
                    form.cleaned_data["start"],
                    form.cleaned_data["end"],
                    limit=form.cleaned_data["limit"],
                    using=queryset.db,
                )
            except (BackfillError, LookupError) as exc:  # refused, too long, or gone
                self.message_user(request, f"{task}: not backfilled: {exc}", messages.WARNING)
                continue
            done.append(result)
            self.log_change(request, task, f"Backfilled (action): {result.describe()}")
        if done:
            queued = sum(result.queued for result in done)
            already = sum(result.already for result in done)
            self.message_user(
                request,
                f"{len(done)} task(s) backfilled: {queued} run(s) queued"
                + (f", {already} instant(s) had run already" if already else "")
                + "; each task's run one at a time, oldest first.",
                messages.SUCCESS,
            )
        return None


# --- runs ---------------------------------------------------------------------------------


@admin.register(TaskRun)
class TaskRunAdmin(RunDisplays, _TaskRunAdminBase):
    list_display = (
        "run_link",
        "task",
        "scheduled_for_display",
        "status_display",
        "lag_display",
        "duration_display",
        "worker",
        "error_line",
    )
    list_display_links = None
    list_filter = ("status", "scheduled_for", "task")
    list_select_related = ("task",)
    search_fields = ("task__label", "error")
    # The newest first by primary key: an index range however long the history
    # (the model's ordering by instant would sort the whole table).
    ordering = ("-id",)
    show_full_result_count = False
    readonly_fields = fields = (
        "task_link",
        "scheduled_for_display",
        "status_display",
        "queued_at_display",
        "started_at_display",
        "finished_at_display",
        "lag_display",
        "duration_display",
        "worker",
        "job_id",
        "error_display",
        "traceback_display",
        "details_display",
    )

    class Media:
        css = {"all": ("sisy/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRun]:
        queryset: QuerySet[TaskRun] = (
            super()
            .get_queryset(request)
            .annotate(
                duration_value=F("finished_at") - F("started_at"),
                lag_value=F("started_at") - F("scheduled_for"),
            )
        )
        return queryset

    def get_list_filter(self, request: HttpRequest) -> Any:
        # A filter listing every task helps with a few dozen and drowns the
        # page with thousands: then the search box (task label) and the task
        # page's link to its runs do the job.
        if Task.objects.count() > TASK_FILTER_MAX:
            return ("status", "scheduled_for")
        return self.list_filter

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TaskRun | None = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(request, _without_nav_sidebar(extra_context))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        run = self.get_object(request, unquote(object_id))
        if run is not None:
            # Titled with the run, not with TaskRun.__str__ (which starts with the task id).
            title = f"Run {run.pk} of task {run.task_id}: {run.task.label}"
            extra_context = {**(extra_context or {}), "title": title, "subtitle": None}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="task")
    def task_link(self, run: TaskRun) -> str:
        url = reverse("admin:sisy_task_change", args=[run.task_id])
        return format_html('<a href="{}">{}</a>', url, run.task)

    @admin.display(description="queued at")
    def queued_at_display(self, run: TaskRun) -> str:
        return _moment(run.queued_at)

    @admin.display(description="started at")
    def started_at_display(self, run: TaskRun) -> str:
        return _moment(run.started_at)

    @admin.display(description="finished at")
    def finished_at_display(self, run: TaskRun) -> str:
        return _moment(run.finished_at)

    @admin.display(description="error")
    def error_display(self, run: TaskRun) -> str:
        return _pre(run.error)

    @admin.display(description="traceback")
    def traceback_display(self, run: TaskRun) -> str:
        return _pre(run.traceback)

    @admin.display(description="details")
    def details_display(self, run: TaskRun) -> str:
        if not run.details:
            return "-"
        return _pre(_json(run.details))
