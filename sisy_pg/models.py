"""Sisy's public models and helpers: ``Task``, ``TaskRun``, ``task_with_callable``.

The task row is the schedule: ``next_run`` is the next instant it fires, kept by
the worker's planner and by the triggers in ``sql/schema.sql``, so that a change
made by any writer (ORM, admin, migration, psql) is obeyed at once.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    connections,
    models,
    router,
    transaction,
)
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import callables, conf, limits, policies, schedule
from .schedule import PlanInput
from .vocabulary import (
    FINAL_STATUSES,
    Action,
    Refusal,
    RunStatus,
    TaskState,
    invalid_parameter,
)


class TaskDefinitionError(ValidationError, ValueError):
    """An invalid task: a ``ValidationError`` for forms, a ``ValueError`` for Sisy code."""


# The database constraint that makes labels unique (see sql/schema.sql).
LABEL_UNIQUE_CONSTRAINT = "sisy_task_label_unique"
# How the trigger on sisy_task refuses a zone PostgreSQL does not know (sql/schema.sql).
ZONE_REFUSED = "sisy_task.timezone: unknown time zone"
LABEL_MAX_LENGTH = 255


def _userdata_error(userdata: Any) -> str | None:
    """Why ``userdata`` cannot be stored (a JSON object within the limits), or None."""
    if isinstance(userdata, limits.UnreadableJSON):
        return limits.json_error("userdata", userdata)
    if not isinstance(userdata, dict):
        return f"userdata must be a dict, not {type(userdata).__name__}"
    return limits.json_error("userdata", userdata)


def _label_error(label: Any) -> str | None:
    if not isinstance(label, str):
        return f"label must be a string, not {type(label).__name__}"
    if "\x00" in label:
        return "label must not contain the NUL character: PostgreSQL cannot store it"
    if len(label) > LABEL_MAX_LENGTH:
        return (
            f"label is {len(label)} characters long; at most {LABEL_MAX_LENGTH} are allowed "
            f"(it starts {limits.printable(label[:40])!r})"
        )
    controls = limits.control_characters(label)
    if controls:
        # A newline or an escape sequence in a label would forge lines of
        # manage.py sisy list and of the logs (sisy_task_label_printable).
        shown = ", ".join(repr(c) for c in controls)
        return f"label must not contain control characters (it has {shown})"
    return None


def _label_clash_message(label: str, other_pk: Any = None, defaulted: bool = False) -> str:
    where = f"already exists (id {other_pk})" if other_pk is not None else "was just created"
    message = f"a task labelled {label!r} {where}: labels are unique, give this task another label"
    if defaulted:
        message += " (a task created without one is labelled with its callable's dotted path)"
    return message


def _validate_userdata(userdata: Any) -> dict[str, Any]:
    if userdata is None:
        return {}
    error = _userdata_error(userdata)
    if error:
        raise TaskDefinitionError({"userdata": error})
    checked: dict[str, Any] = userdata
    return checked


def database_now(using: str | None = None) -> dt.datetime:
    """The database's clock, which scheduling decisions read instead of Python's.

    The triggers and the claim query read it too: with one clock, a web
    server whose clock is off cannot make a task fire early or late.
    """
    with connections[using or DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        now: dt.datetime = cursor.fetchone()[0]
        return now


def _validate_delay_until(delay_until: dt.datetime | None, using: str) -> None:
    """Sisy's checks and messages: an aware datetime, in the future."""
    if delay_until is None:
        return
    if not isinstance(delay_until, dt.datetime):
        raise ValueError("delay_until must be a datetime.datetime instance")
    if timezone.is_naive(delay_until):
        raise ValueError(
            f"delay_until must be an aware datetime (with tzinfo), got naive {delay_until}"
        )
    if delay_until <= database_now(using):
        raise ValueError("Task cannot start running in the past")


# Columns the planner and the workers keep (see Task.save).
STATE_FIELDS = ("next_run", "last_run", "fire_count", "finished_at", "error")

# How "<task> cannot ..." ends, for each action.
_CANNOT = {
    Action.RUN_NOW: "run",
    Action.PAUSE: "be paused",
    Action.RESUME: "be resumed",
    Action.CLEAR_ERROR: "have its error cleared",
}


# The longest note a pause keeps (sisy_task_pause_note_length).
PAUSE_NOTE_MAX_LENGTH = 1000


@dataclasses.dataclass(frozen=True)
class Pause:
    """Why a task is paused and until when (``Task.pause_info``); docs/pausing.md."""

    note: str
    until: dt.datetime | None  # None: until someone resumes it
    paused_at: dt.datetime
    paused_by: str

    @classmethod
    def from_json(cls, document: Any) -> Pause | None:
        """Read ``sisy_pause_of_v1``'s answer (None when the task has no pause)."""
        if not isinstance(document, dict):
            return None
        until = document.get("until")
        return cls(
            note=document["note"],
            until=parse_datetime(until) if until else None,
            paused_at=parse_datetime(document["paused_at"]) or timezone.now(),
            paused_by=document["paused_by"],
        )


def _pause_until(until: dt.datetime | dt.timedelta | None) -> dict[str, Any]:
    """The end of a pause as SQL parameters: an instant, or a delay from the database's now."""
    if until is None or isinstance(until, dt.datetime):
        if until is not None and timezone.is_naive(until):
            raise ValueError(f"until must be an aware datetime (with tzinfo), got naive {until}")
        return {"until": until, "delay": None}
    if isinstance(until, dt.timedelta):
        return {"until": None, "delay": until}
    raise ValueError(f"until must be a datetime or a timedelta, not {type(until).__name__}")


def _pause_note(note: Any) -> str:
    if not isinstance(note, str):
        raise ValueError(f"note must be a string, not {type(note).__name__}")
    if "\x00" in note:
        raise ValueError("note must not contain the NUL character: PostgreSQL cannot store it")
    if len(note) > PAUSE_NOTE_MAX_LENGTH:
        raise ValueError(
            f"note is {len(note)} characters long; at most {PAUSE_NOTE_MAX_LENGTH} are allowed"
        )
    return note


class ActionRefused(ValueError):
    """An action (run now, pause, resume, clear error) that a task's row refused."""

    def __init__(self, task: Task, action: Action, refusal: Refusal) -> None:
        self.task, self.action, self.refusal = task, action, refusal
        super().__init__(f"{task} cannot {_CANNOT[action]}: it is {refusal.label}")


@dataclasses.dataclass(frozen=True)
class ActionResult:
    """What ``sisy_act_v1`` did to one task: done, or the refusal."""

    task_id: int
    label: str
    action: Action
    refusal: Refusal | None

    @property
    def done(self) -> bool:
        return self.refusal is None


class TaskQuerySet(models.QuerySet["Task"]):
    def act(
        self,
        action: Action | str,
        *,
        note: str = "",
        until: dt.datetime | dt.timedelta | None = None,
    ) -> list[ActionResult]:
        """Do ``action`` to the tasks of this queryset, each as its row allows.

        The rule is the database's (``sisy_act_v1``, which psql operators,
        the admin and ``manage.py sisy`` call too): each task's row is locked
        and decides, so a stale copy cannot make a paused task run. A pause
        may carry a ``note`` and an end, ``until`` (``sisy_pause_tasks_v1``;
        see ``Task.pause``).
        """
        action = Action(action)
        note = _pause_note(note)
        end = _pause_until(until)
        noted = bool(note) or until is not None
        if noted and action != Action.PAUSE:
            raise ValueError(f"only a pause takes a note or an end, not {action.value}")
        ids = list(self.values_list("pk", flat=True))
        if not ids:
            return []
        with connections[self.db].cursor() as cursor:
            if noted:
                try:
                    # A savepoint: an end refused leaves the caller's transaction usable.
                    with transaction.atomic(using=self.db):
                        cursor.execute(
                            "SELECT task_id, label, refusal FROM sisy_pause_tasks_v1(%s, %s, "
                            "coalesce(%s::timestamptz, clock_timestamp() + %s::interval))",
                            [ids, note, end["until"], end["delay"]],
                        )
                except DatabaseError as exc:
                    message = invalid_parameter(exc)  # an end that is not in the future
                    if message is None:
                        raise
                    raise ValueError(message) from None
            else:
                cursor.execute(
                    "SELECT task_id, label, refusal FROM sisy_act_v1(%s, %s)", [action.value, ids]
                )
            return [
                ActionResult(task_id, label, action, Refusal(refusal) if refusal else None)
                for task_id, label, refusal in cursor.fetchall()
            ]

    def _count_done(self, action: Action) -> int:
        return sum(result.done for result in self.act(action))

    def run_now(self) -> int:
        """Fire the runnable tasks once, now, then as scheduled; return how many.

        Paused, finished and broken tasks are left alone (``act()`` says why).
        """
        return self._count_done(Action.RUN_NOW)

    def pause(
        self,
        note: str = "",
        until: dt.datetime | dt.timedelta | None = None,
    ) -> int:
        """Pause the tasks (their queued runs are cancelled); return how many were paused.

        With a ``note`` or an end (``until``), as ``Task.pause``: tasks
        already paused are given the new note and end, and count.
        """
        return sum(result.done for result in self.act(Action.PAUSE, note=note, until=until))

    def resume(self) -> int:
        """Resume the paused tasks (their error, if any, is cleared); return how many."""
        return self._count_done(Action.RESUME)

    def clear_error(self) -> int:
        """Clear the error of the broken tasks, so that a planner tries them again; how many."""
        return self._count_done(Action.CLEAR_ERROR)

    def bulk_create(  # type: ignore[override]
        self, objs: Iterable[Task], batch_size: int | None = None, **kwargs: Any
    ) -> list[Task]:
        """Create many tasks, checked as ``save()`` checks one, in a few queries.

        Every task is validated (one ``TaskDefinitionError`` lists what is
        wrong with which, by position, and nothing is created), labels are
        checked against the table and each other in one query, and each
        enabled task gets its next run from one read of the database's clock,
        so that the new rows are due at once without waiting for a planner.
        Django's options (``ignore_conflicts``, ...) pass through.
        """
        tasks = list(objs)
        using = self.db
        now = database_now(using)
        problems: dict[str, list[str]] = {}
        for position, task in enumerate(tasks):
            errors = task.definition_errors(using, now=now, check_label=False)
            problems.update({f"{position}.{field}": [message] for field, message in errors.items()})
        labels = collections.Counter(task.label for task in tasks)
        taken = dict(
            self.model._default_manager.using(using)
            .filter(label__in=list(labels))
            .values_list("label", "pk")
        )
        for position, task in enumerate(tasks):
            if task.label in taken or labels[task.label] > 1:
                problems.setdefault(f"{position}.label", []).append(
                    _label_clash_message(task.label, taken.get(task.label))
                )
        if problems:
            raise TaskDefinitionError(problems)
        for task in tasks:
            task._prepare_for_insert(now, using)
        return super().bulk_create(tasks, batch_size=batch_size or 1000, **kwargs)

    def not_runnable(self) -> TaskQuerySet:
        """The tasks ``run_now()`` leaves alone: paused, finished or broken (the same rule)."""
        refusal = models.Func(
            models.Value(Action.RUN_NOW.value),
            "enabled",
            "finished_at",
            "error",
            function="sisy_refusal_v1",
            output_field=models.CharField(),
        )
        tasks: TaskQuerySet = self.alias(run_now_refusal=refusal).filter(
            models.Q(run_now_refusal__isnull=False)
        )
        return tasks

    def with_status(self) -> TaskQuerySet:
        """Annotate ``is_running``, ``last_status``, ``current_state`` and ``pause_json``.

        ``current_state`` is ``sisy_task_state_v1``'s answer, the definition
        the views and every edge use; ``Task.state`` reads it, and
        ``Task.pause_info`` reads ``pause_json`` (``sisy_pause_of_v1``).
        """
        runs = TaskRun.objects.filter(task=OuterRef("pk"))
        tasks: TaskQuerySet = self.annotate(
            is_running=Exists(runs.filter(status=RunStatus.RUNNING)),
            last_status=Subquery(
                runs.filter(status__in=FINAL_STATUSES)
                .order_by("-scheduled_for")
                .values("status")[:1]
            ),
        ).annotate(
            current_state=models.Func(
                "error",
                "finished_at",
                "enabled",
                "next_run",
                "is_running",
                "last_status",
                function="sisy_task_state_v1",
                output_field=models.CharField(),
            ),
            pause_json=models.Func(
                "pk", "enabled", function="sisy_pause_of_v1", output_field=models.JSONField()
            ),
        )
        return tasks

    def in_state(self, *states: TaskState | str) -> TaskQuerySet:
        """The tasks in one of ``states`` (``with_status()`` annotated)."""
        tasks: TaskQuerySet = self.with_status().filter(models.Q(current_state__in=states))
        return tasks


class Task(models.Model):
    """A recurring task: a stored callable, a cron schedule and its state."""

    # Unique (constraint sisy_task_label_unique): taskinfo_with_label and
    # Sisy-style reverse migrations (Task.objects.get(label=...)) find one task.
    label = models.CharField(
        max_length=LABEL_MAX_LENGTH,
        unique=True,
        blank=True,
        help_text="Unique. Defaults to the callable's dotted path.",
    )
    callable_info = models.JSONField(
        decoder=limits.JSONDecoder,
        help_text="Description of the callable (see taskinfo_with_label).",
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
    # limits.JSONDecoder: a row nested too deep for Python's parser (written
    # by raw SQL) is read as an UnreadableJSON, not a RecursionError.
    userdata = models.JSONField(default=dict, blank=True, decoder=limits.JSONDecoder)
    # The task's policies (policies.py: missed, grace, overlap, timeout,
    # retries, retry_delay), and the options of later releases: the columns
    # this model maps are frozen since sisy.0001_initial (see the upgrade rule,
    # docs/concepts.md#the-upgrade-rule), so options are keys here, checked by
    # Python and by SQL.
    options = models.JSONField(
        decoder=limits.JSONDecoder,
        default=dict,
        blank=True,
        help_text=(
            'Policies, e.g. {"missed": "skip", "grace": 30, "overlap": "buffer_one", '
            '"timeout": 600, "retries": 3, "retry_delay": 10, "priority": 5}.'
        ),
    )

    # Kept by the planner and the triggers; see sql/schema.sql.
    next_run = models.DateTimeField(null=True, blank=True, editable=False)
    last_run = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Instant of the latest fire."
    )
    fire_count = models.PositiveIntegerField(default=0, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    error = models.TextField(
        blank=True,
        default="",
        editable=False,
        help_text="Why the task cannot run (it is broken); cleared when its definition changes.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ("label", "id")

    def __str__(self) -> str:
        label = self.label or self.callable_path
        return f"Task {self.pk}: {label}" if self.pk is not None else f"Task (unsaved): {label}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        errors = self.definition_errors(using=kwargs.get("using"))
        if errors:
            raise TaskDefinitionError(errors)
        if not self._state.adding and not args and kwargs.get("update_fields") is None:
            # The planner and the workers own the state columns: a copy read
            # a while ago (an admin form, a long-lived object) must not write
            # back a stale next_run, fire_count or error.
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in STATE_FIELDS
            ]
        if self._state.adding:
            self._prepare_for_insert(using=kwargs.get("using"))
        else:
            self._sync_overlap()
        try:
            # A savepoint: what the database refuses leaves the caller's
            # transaction usable, with the message below.
            with transaction.atomic(using=self._database(kwargs.get("using"))):
                super().save(*args, **kwargs)
        except IntegrityError as exc:
            if ZONE_REFUSED in str(exc):
                # Python's tz database knows it, PostgreSQL's does not.
                raise TaskDefinitionError(
                    {"timezone": f"PostgreSQL does not know the time zone {self.timezone!r}"}
                ) from exc
            # Another writer took the label between the check and the INSERT.
            if LABEL_UNIQUE_CONSTRAINT not in str(exc):
                raise
            raise TaskDefinitionError({"label": _label_clash_message(self.label)}) from exc

    def _sync_overlap(self) -> None:
        if isinstance(self.options, dict) and self.options.get("overlap"):
            # One truth for Sisy's flag and the richer option.
            self.allow_overlap = self.options["overlap"] == "allow"

    def _prepare_for_insert(self, now: dt.datetime | None = None, using: str | None = None) -> None:
        """Settle what a new row carries: its overlap flag and its first instant.

        Planned here (from the database's clock, ``now`` when already read)
        so that a new row shows its next run at once; rows written without
        it (a historical model in a migration, SQL) are planned by a worker.
        """
        self._sync_overlap()
        if self.next_run is None and self.enabled:
            self.next_run = self._plan_from_now(using, now)

    def _database(self, using: str | None = None) -> str:
        return using or self._state.db or router.db_for_write(type(self), instance=self)

    def _plan_from_now(
        self, using: str | None = None, now: dt.datetime | None = None
    ) -> dt.datetime | None:
        now = now or database_now(self._database(using))
        return schedule.plan_from_now(self.plan_input(), now).next_run

    # --- Sisy's Task methods and properties ----------------------------------

    @property
    def funcinfo(self) -> dict[str, Any]:
        """Sisy's name for the callable description (its ``_func_info`` column).

        A copy, as Sisy's was: assign a new description to change it.
        """
        return dict(self.callable_info or {})

    @funcinfo.setter
    def funcinfo(self, info: dict[str, Any]) -> None:
        # Checked now, so a wrong description fails where it is written.
        self.callable_info = callables.validate_info(info)

    def func_from_info(self) -> Callable[[Any], Any]:
        """The live callable; an instance method is bound to its row, fetched now; a Django
        task's enqueues it with the userdata as its keyword arguments."""
        return callables.resolve(self.callable_info, using=self._database(), userdata=self.userdata)

    def calc_next_run(self) -> dt.datetime | None:
        """Compute ``next_run`` from now (the database's clock), save, and return it.

        None when the task is disabled or has nothing left to run.
        """
        self.next_run = self._plan_from_now() if self.enabled else None
        if self._state.adding:
            self.save()
        else:
            self.save()
            type(self).objects.using(self._database()).filter(pk=self.pk).update(
                next_run=self.next_run
            )
        return self.next_run

    def refusal(self, action: Action | str) -> Refusal | None:
        """Why ``action`` would be refused for this copy of the task, or None.

        Asks the database's rule (``sisy_refusal_v1``), which ``act()``
        applies to the row itself.
        """
        with connections[self._database()].cursor() as cursor:
            cursor.execute(
                "SELECT sisy_refusal_v1(%s, %s, %s, %s)",
                [Action(action).value, self.enabled, self.finished_at, self.error],
            )
            refusal = cursor.fetchone()[0]
        return Refusal(refusal) if refusal else None

    def not_runnable_reason(self) -> Refusal | None:
        """Why ``run_asap()`` would refuse: paused, finished or broken; None when it can run."""
        return self.refusal(Action.RUN_NOW)

    def act(
        self,
        action: Action | str,
        *,
        note: str = "",
        until: dt.datetime | dt.timedelta | None = None,
    ) -> None:
        """Do ``action`` to the task as the admin, the CLI and psql do (``sisy_act_v1``).

        The row decides, not this copy (it may have been paused or finished
        since); the copy is refreshed afterwards. Raises ``ActionRefused`` (a
        ValueError) saying why when the row refuses. ``note`` and ``until``:
        a pause's (see ``pause()``).
        """
        action = Action(action)
        if self.pk is None:
            raise ValueError(f"{self} cannot {_CANNOT[action]}: save it first")
        results = (
            type(self)
            .objects.using(self._database())
            .filter(pk=self.pk)
            .act(action, note=note, until=until)
        )
        if not results:
            raise ValueError(f"{self} cannot {_CANNOT[action]}: it was deleted")
        self.refresh_from_db(fields=["enabled", "finished_at", "next_run", "error"])
        for stale in ("current_state", "is_running", "last_status", "pause_json"):
            self.__dict__.pop(stale, None)  # with_status()'s
        if results[0].refusal is not None:
            raise ActionRefused(self, action, results[0].refusal)

    def run_asap(self) -> None:
        """Run the task once, now (then as scheduled), as the admin's "Run now" does.

        Raises ``ActionRefused`` (a ValueError) saying why when the task is
        paused, finished or broken.
        """
        self.act(Action.RUN_NOW)

    def pause(
        self,
        note: str = "",
        until: dt.datetime | dt.timedelta | None = None,
    ) -> None:
        """Stop firing the task; its queued runs are cancelled (``ActionRefused`` if not).

        ``note`` says why; ``until`` (an aware datetime, or a timedelta from
        the database's now) is when a worker's planner resumes it by itself,
        on the database's clock. Both are shown wherever the state is
        (``pause_info``). A task already paused is given the new note and
        end; an end that is not in the future raises ``ValueError``. Who
        paused is the actor of ``sisy_pg.audit.acting_as``, else the
        database role.
        """
        self.act(Action.PAUSE, note=note, until=until)

    def resume(self) -> None:
        """Fire the paused task as scheduled again (``ActionRefused`` if not)."""
        self.act(Action.RESUME)

    def clear_error(self) -> None:
        """Forget why the task broke: a planner plans it again (``ActionRefused`` if not)."""
        self.act(Action.CLEAR_ERROR)

    # --- Sisy's constructors -------------------------------------------------

    @classmethod
    def run_iterations(
        cls,
        the_callable: Any,
        iterations: int = 1,
        label: str | None = None,
        schedule: str = "* * * * * *",
        userdata: dict[str, Any] | None = None,
        run_immediately: bool = False,
        delay_until: dt.datetime | None = None,
        pk_override: Any = None,
    ) -> Task:
        """Create and save a task that runs ``iterations`` times, then finishes.

        Without ``label``, the task is labelled with the callable's dotted
        path or, when a task (perhaps a finished one) already has that label,
        the path followed by `` (2)``, `` (3)``...: a one-off run of a
        callable can be asked for again (Sisy's ``run_once`` has no label
        parameter). An explicit label that is taken is an error.
        """
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer (got {iterations!r})")
        using = router.db_for_write(cls)
        _validate_delay_until(delay_until, using)
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
        if label:
            task.save()
            return task
        for attempt in range(3):
            task.label = _free_label(cls, task.callable_path, using)
            try:
                # A savepoint: a label taken meanwhile leaves the caller's
                # transaction usable for the next attempt.
                with transaction.atomic(using=using):
                    task.save(using=using)
            except TaskDefinitionError as exc:
                if attempt == 2 or set(exc.message_dict) != {"label"}:
                    raise
            else:
                break
        return task

    @classmethod
    def run_once(
        cls,
        the_callable: Any,
        userdata: dict[str, Any] | None = None,
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
    def policy(self) -> policies.Policy:
        """The task's policies (missed instants, overlap, retries, timeout), defaults filled in."""
        options = self.options if isinstance(self.options, dict) else {}
        return policies.Policy.of(options, self.allow_overlap)

    @property
    def broken(self) -> bool:
        """Whether the task cannot run (``error`` says why) until its row is fixed."""
        return bool(self.error)

    @property
    def state(self) -> TaskState:
        """The task's state, as ``sisy_task_state_v1`` defines it for every edge.

        Read from ``TaskQuerySet.with_status()``'s annotation when there is
        one, else asked of the database: for a saved task, of its row and runs
        as they are now; for an unsaved one, of this copy's values.
        """
        state = getattr(self, "current_state", None)
        if state is None and self.pk is not None:
            stored = (
                type(self)
                ._default_manager.using(self._database())
                .with_status()
                .filter(pk=self.pk)
                .first()
            )
            state = getattr(stored, "current_state", None)
        if state is None:
            with connections[self._database()].cursor() as cursor:
                cursor.execute(
                    "SELECT sisy_task_state_v1(%s, %s, %s, %s, false, NULL)",
                    [self.error, self.finished_at, self.enabled, self.next_run],
                )
                state = cursor.fetchone()[0]
        return TaskState(state)

    @property
    def pause_info(self) -> Pause | None:
        """The note and end of the task's pause; None when it has none (or is not paused).

        Read from ``TaskQuerySet.with_status()``'s annotation when there is
        one, else from the database.
        """
        if "pause_json" in self.__dict__:
            return Pause.from_json(self.__dict__["pause_json"])
        if self.pk is None or self.enabled:
            return None
        with connections[self._database()].cursor() as cursor:
            cursor.execute("SELECT sisy_pause_of_v1(%s, %s)", [self.pk, self.enabled])
            document = cursor.fetchone()[0]
        return Pause.from_json(limits.loads(document) if isinstance(document, str) else document)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def running(self) -> bool:
        """Whether a run of this task is executing now."""
        annotated = getattr(self, "is_running", None)
        if annotated is not None:
            return bool(annotated)
        return self.runs.filter(status=TaskRun.Status.RUNNING).exists()

    @property
    def last_outcome(self) -> str | None:
        """Status of the latest run that ended (succeeded, failed, skipped, cancelled)."""
        if hasattr(self, "last_status"):
            # Annotated by TaskQuerySet.with_status(): a TaskRun.Status value or None.
            last_status: str | None = self.last_status
            return last_status
        run = self.runs.filter(status__in=TaskRun.FINAL_STATUSES).order_by("-scheduled_for").first()
        return run.status if run else None

    @property
    def callable_path(self) -> str:
        # A JSON value: a string once validated (see callables.validate_info).
        path: str = (self.callable_info or {}).get("func_path", "")
        return path

    # --- validation ----------------------------------------------------------

    def definition_errors(
        self,
        using: str | None = None,
        *,
        now: dt.datetime | None = None,
        check_label: bool = True,
    ) -> dict[str, str]:
        """Field -> message for every invalid part of the definition.

        Reads the database (database ``using``) for what only it knows: a
        label taken by another task (unless ``check_label`` is false: the
        caller checks many at once), and its clock for an ``end_running``
        already past when the task is created (``now``, when the caller read
        it already).
        """
        errors: dict[str, str] = {}
        try:
            self.schedule = schedule.validate_schedule(self.schedule)
        except schedule.ScheduleError as exc:
            errors["schedule"] = str(exc)
        try:
            schedule.get_timezone(self.timezone)
        except schedule.ScheduleError as exc:
            errors["timezone"] = str(exc)
        userdata_error = _userdata_error(self.userdata)
        if userdata_error:
            errors["userdata"] = userdata_error
        options_error = limits.json_error("options", self.options)
        options_errors = [options_error] if options_error else policies.options_errors(self.options)
        if options_errors:
            errors["options"] = "; ".join(options_errors)
        callable_info_error = limits.json_error("callable_info", self.callable_info, settings=False)
        if callable_info_error:
            errors["callable_info"] = callable_info_error
        else:
            try:
                callables.validate_info(self.callable_info)
            except callables.CallableError as exc:
                errors["callable_info"] = str(exc)
            else:
                if "userdata" not in errors:
                    try:
                        # A Django task's keyword arguments.
                        callables.check_arguments(self.callable_info, self.userdata)
                    except callables.CallableError as exc:
                        errors["userdata"] = str(exc)
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
        if (
            self._state.adding
            and "end_running" not in errors
            and isinstance(self.end_running, dt.datetime)
            and self.end_running <= (now or database_now(self._database(using)))
        ):
            # Creating a finished task is a mistake (a later edit may end a task).
            errors["end_running"] = (
                f"end_running {self.end_running.isoformat()} is in the past: "
                "the task would never run"
            )
        # The columns' bounds, so that the database never answers with a DataError.
        for name, lowest, largest in (
            ("iterations", 0, limits.INTEGER_MAX),
            ("fire_count", 0, limits.INTEGER_MAX),
            ("id", -limits.BIGINT_MAX - 1, limits.BIGINT_MAX),
        ):
            value = getattr(self, name)
            if name == "id" and not isinstance(value, int):
                continue  # None (a new task), or a key Django converts
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not lowest <= value <= largest
            ):
                forever = " (forever)" if name == "iterations" else ""
                errors[name] = (
                    f"{name} must be a whole number from {lowest}{forever} to {largest}, "
                    f"not {value!r}"
                )
        if not self.label:
            self.label = self.callable_path
        defaulted = bool(self.label) and self.label == self.callable_path
        label_error = _label_error(self.label)
        if label_error:
            errors["label"] = label_error
        elif self.label and check_label:
            others = (
                type(self)._default_manager.using(self._database(using)).filter(label=self.label)
            )
            if self.pk is not None:
                others = others.exclude(pk=self.pk)
            other_pk = others.values_list("pk", flat=True).first()
            if other_pk is not None:
                errors["label"] = _label_clash_message(self.label, other_pk, defaulted)
        return errors

    def validate_unique(self, exclude: Collection[str] | None = None) -> None:
        # clean() (definition_errors) reports a taken label, naming the task
        # that has it; Django's generic message would say it a second time.
        super().validate_unique(exclude={*(exclude or ()), "label"})

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

    # PlanInput, not schedule.PlanInput: in the class body ``schedule`` is the field.
    def plan_input(self) -> PlanInput:
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

    Status = RunStatus  # sisy_pg.vocabulary: the statuses SQL knows too
    FINAL_STATUSES = FINAL_STATUSES

    # The unique (task, scheduled_for) constraint's index serves this key.
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs", db_index=False)
    scheduled_for = models.DateTimeField(help_text="The instant this run is for.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    job_id = models.BigIntegerField(null=True, blank=True, help_text="procrastinate job id")
    worker = models.CharField(max_length=255, blank=True, default="")
    # Facts about a run that later releases record (the columns are frozen,
    # as for Task.options).
    details = models.JSONField(default=dict, blank=True, editable=False, decoder=limits.JSONDecoder)

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
        return (
            f"Run {self.pk} of task {self.task_id} for {self.scheduled_for.isoformat()} "
            f"({self.status})"
        )

    @property
    def lag(self) -> dt.timedelta | None:
        """How late the run started compared with its scheduled instant."""
        if self.started_at is None:
            return None
        return self.started_at - self.scheduled_for


def _free_label(model: type[Task], base: str, using: str) -> str:
    """``base``, or ``base (n)`` with the smallest n >= 2 that no task has."""
    taken = set(
        model._default_manager.using(using)
        .filter(models.Q(label=base) | models.Q(label__startswith=f"{base} ("))
        .values_list("label", flat=True)
    )
    if base not in taken:
        return base
    number = 2
    while True:
        suffix = f" ({number})"
        candidate = base[: LABEL_MAX_LENGTH - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        number += 1


def task_with_callable(
    the_callable: Any,
    label: str | None = None,
    schedule: str | None = None,
    userdata: dict[str, Any] | None = None,
    pk_override: Any = None,
) -> Task:
    """Return an unsaved Task for ``the_callable`` (an object or a dotted path).

    Raises ValueError naming the problem for an unknown, unusable or not
    allowed callable (see SISY_ALLOWED_CALLABLES), an invalid schedule or one
    with no instant, a label too long, or userdata that is not a JSON object
    (a dict of JSON values). Whether the label is free is checked by ``save()``.
    """
    from . import schedule as schedules

    info = callables.describe(the_callable, pk_override=pk_override)
    expression = schedules.validate_schedule(
        conf.settings.DEFAULT_SCHEDULE if schedule is None else schedule
    )
    if label:
        label_error = _label_error(label)
        if label_error:
            raise TaskDefinitionError({"label": label_error})
    userdata = _validate_userdata(userdata)
    try:
        callables.check_arguments(info, userdata)
    except callables.CallableError as exc:
        raise TaskDefinitionError({"userdata": str(exc)}) from None
    return Task(
        label=label or info["func_path"],
        callable_info=info,
        schedule=expression,
        userdata=userdata,
    )


def taskinfo_with_label(label: str) -> dict[str, Any]:
    """Sisy's lookup: the stored callable description of the task with ``label``.

    Labels are unique (unlike Sisy's), so there is at most one such task;
    none raises ``Task.DoesNotExist``.
    """
    task: Task = Task.objects.get(label=label)
    return task.funcinfo


# --- Sisy's module helpers ----------------------------------------------------
#
# Sisy 1.0b3's own tests match the texts of its refusals: these helpers raise
# those texts where Sisy refused the same thing (CallableError.sisy_message);
# sisy-pg's own API (task_with_callable, save, the admin) says more.


@contextlib.contextmanager
def _in_sisy_words() -> Iterator[None]:
    """A refusal raised as Sisy 1.0b3 worded it, where Sisy refused it too."""
    try:
        yield
    except callables.CallableError as exc:
        if exc.sisy_message is not None:
            raise type(exc)(exc.sisy_message) from exc
        raise


def get_func_info(the_callable: Any, pk_override: Any = None) -> dict[str, Any]:
    """The description ``task_with_callable`` stores for ``the_callable``."""
    with _in_sisy_words():
        return callables.describe(the_callable, pk_override=pk_override)


def funcinfo_from_string(dotted_path: str, pk_override: Any = None) -> dict[str, Any]:
    """The description of the callable at ``dotted_path``."""
    if not isinstance(dotted_path, str):
        raise ValueError(f"dotted_path must be a string, not {type(dotted_path).__name__}")
    with _in_sisy_words():
        return callables.describe(dotted_path, pk_override=pk_override)


def get_module_member_by_dottedpath(path: str) -> Any:
    """The object at ``path``: a module's member, or a member of a class in it."""
    if not isinstance(path, str):
        raise ValueError(f"path must be a dotted string, not {type(path).__name__}")
    return callables.import_object(path)


def func_from_string(dotted_path: str) -> Callable[..., Any]:
    """The task callable at ``dotted_path``: a function, a classmethod or a staticmethod.

    As Sisy's: ValueError for a module, a class, an object that is not
    callable, a signature other than ``(message)``, and an instance method
    (there is no row to call it on). The rule is the worker's
    (callables.locate) without SISY_ALLOWED_CALLABLES: the object is
    returned to the calling code, neither stored nor called.
    """
    if not isinstance(dotted_path, str):
        raise ValueError(f"path must be a dotted string, not {type(dotted_path).__name__}")
    with _in_sisy_words():
        target = callables.locate(dotted_path, allowlist=False)
        if target.func_type == callables.INSTANCEMETHOD:
            raise callables.unbound_error(target)
    return target.bind()


def get_member(obj: Any, name: str) -> Any:
    """``obj.name``; ValueError naming both when there is no such member."""
    return callables.get_member(obj, name)
