"""``manage.py sisy``: list, inspect, drive and probe the tasks from a shell.

One command with subcommands (``list``, ``show``, ``next``, ``run``,
``pause``, ``resume``, ``clear-error``, ``backfill``, ``history``, ``check``,
``health``, ``metrics``), so
that an operator needs neither the admin nor psql. A task is named by its
label or its id (``sisy_task_id_v1``: the label wins), and what may be done to
it is decided by the database (``sisy_act_v1``), as for the admin and psql.
Those that print data take ``--json`` for scripts. Failures raise
``CommandError``: a one-line message and a non-zero exit status (``health``
is meant for liveness probes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, transaction

from sisy_pg import audit, backfill, conf, liveness, procrastinate_seam, schedule, when
from sisy_pg.limits import printable
from sisy_pg.models import ActionRefused, Pause, Task, TaskRun, database_now
from sisy_pg.schedule_text import describe, instants_of, seconds_first_warning
from sisy_pg.schedule_text import (  # re-exported: tests/integration/test_sisy_command.py imports it
    seconds_first_suggestion as seconds_first_suggestion,
)
from sisy_pg.vocabulary import Action, TaskState

UTC = dt.timezone.utc
_ONE_MICROSECOND = dt.timedelta(microseconds=1)
# Labels (or workers) named in one health line, at most.
HEALTH_LABELS = 5
# Seconds of history health judges starving tasks and the load by.
HEALTH_RECENT = 300.0
# The checks of sisy_health_v1, in its order (a test keeps them equal).
HEALTH_CHECKS = (
    *("workers", "unplanned", "overdue", "broken", "starving", "overrun", "stuck"),
    *("slots_full", "slots_stuck", "notifications", "load"),
)

Write = Callable[[str], None]


# --- formatting ----------------------------------------------------------------


def stamp(value: dt.datetime, zone: dt.tzinfo = UTC) -> str:
    """An instant to the second in ``zone`` (ISO 8601, ``Z`` for UTC)."""
    text = value.astimezone(zone).isoformat(timespec="seconds")
    return text[:-6] + "Z" if zone is UTC else text


def iso(value: dt.datetime | None, zone: dt.tzinfo = UTC) -> str | None:
    return None if value is None else stamp(value, zone)


def seconds(value: dt.timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds(), 3)


def first_line(text: str, width: int = 100) -> str:
    lines = text.strip().splitlines()
    return lines[0][:width] if lines else ""


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Lines of a left-aligned table (columns as wide as their widest cell)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def parse_when(text: str, zone: dt.tzinfo) -> dt.datetime | dt.timedelta:
    """An end typed on the command line: an instant, or a delay from now (``+2h`` or ``2h``:
    a timedelta, counted from the database's now, not this machine's); see sisy_pg.when."""
    delay = when.duration(text.strip().removeprefix("+"))
    if delay is not None:
        return delay
    end = when.instant(text, zone)
    if end is None:
        raise ValueError(
            "not an instant: give an ISO 8601 date and time (2026-12-24 18:00, in the task's "
            "time zone without an offset) or a delay (90s, 30m, 2h, 1d12h)"
        )
    return end


def pause_summary(pause: Pause | None) -> dict[str, Any] | None:
    """A task's pause as ``list`` and ``show`` give it (instants in UTC); None without one."""
    if pause is None:
        return None
    return {
        "note": pause.note,
        "until": iso(pause.until),
        "paused_at": iso(pause.paused_at),
        "paused_by": pause.paused_by,
    }


# --- what the subcommands compute (also for sisy_status) -----------------------


def task_summary(task: Task) -> dict[str, Any]:
    """A task as ``list`` shows it (instants in UTC)."""
    return {
        "id": task.pk,
        "label": task.label,
        "state": task.state,
        "schedule": task.schedule,
        "timezone": task.timezone,
        "next_run": iso(task.next_run),
        "last_run": iso(task.last_run),
        "last_outcome": task.last_outcome,
        "error": task.error,
        "pause": pause_summary(task.pause_info),
    }


def list_lines(tasks: Sequence[dict[str, Any]]) -> list[str]:
    """The ``list`` table; a broken task's reason on the line below it."""
    if not tasks:
        return ["No sisy task defined."]
    header = (
        *("id", "label", "state", "schedule", "timezone"),
        *("next run (UTC)", "last run (UTC)", "last outcome"),
    )
    rows = [
        (
            str(t["id"]),
            printable(t["label"])[:40],
            t["state"],
            t["schedule"],
            t["timezone"],
            _cell(t["next_run"]),
            _cell(t["last_run"]),
            _cell(t["last_outcome"]),
        )
        for t in tasks
    ]
    lines = table(rows, header)
    out = lines[:1]
    for line, task in zip(lines[1:], tasks, strict=True):
        out.append(line)
        if task["error"]:
            out.append(f"    ! broken: {first_line(task['error'], 200)}")
        pause = task.get("pause")
        if pause:
            note = printable(first_line(pause["note"], 200))
            until = f"until {pause['until']}" if pause["until"] else "until resumed"
            out.append(f"    paused {until}" + (f": {note}" if note else ""))
    return out


def all_tasks() -> list[dict[str, Any]]:
    return [task_summary(t) for t in Task.objects.with_status().order_by("label", "id")]


def upcoming(task: Task, now: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` instants of the task's schedule after ``now``, within its window.

    What the schedule says, not what the planner will do: a paused or
    broken task does not fire, and a "run now" is not an instant of it.
    """
    after = now
    if task.start_running is not None and task.start_running > now:
        after = task.start_running - _ONE_MICROSECOND
    left = task.iterations - task.fire_count if task.iterations else count
    instants: list[dt.datetime] = []
    while len(instants) < min(count, left):
        instant = schedule.next_after(task.schedule, task.timezone, after)
        if task.end_running is not None and instant > task.end_running:
            break
        instants.append(instant)
        after = instant
    return instants


def instant_pairs(instants: Sequence[dt.datetime], zone_name: str) -> list[dict[str, str]]:
    zone = schedule.get_timezone(zone_name)
    return [{"local": stamp(i, zone), "utc": stamp(i)} for i in instants]


def run_summary(run: TaskRun) -> dict[str, Any]:
    """A run as ``history`` and ``show`` show it."""
    # A document too deep to read (a row written before sisy's limits) is no dict.
    details = run.details if isinstance(run.details, dict) else {}
    return {
        "id": run.pk,
        "scheduled_for": iso(run.scheduled_for),
        "status": run.status,
        # A run a backfill asked for says so when nothing else is to be said.
        "reason": details.get("reason") or ("backfill" if details.get("backfill") else None),
        "backfill": bool(details.get("backfill")),
        "jitter": details.get("jitter"),  # seconds its start was delayed after its instant
        "lag": seconds(run.lag),
        "duration": seconds(
            run.finished_at - run.started_at if run.started_at and run.finished_at else None
        ),
        "attempt": details.get("attempt"),
        "error": first_line(run.error),
        # A run of a Django task: the TaskResult it enqueued (followed to its end).
        "task_result_id": details.get("task_result_id"),
    }


def history_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    if not runs:
        return ["No run recorded."]
    header: tuple[str, ...] = ("scheduled for (UTC)", "status", "reason", "lag s", "duration s")
    rows: list[tuple[str, ...]] = [
        (
            r["scheduled_for"],
            r["status"],
            _cell(r["reason"]),
            _cell(r["lag"]),
            _cell(r["duration"]),
        )
        for r in runs
    ]
    if any(r.get("task_result_id") for r in runs):  # the runs of a Django task
        header += ("task result",)
        rows = [(*row, _cell(r.get("task_result_id"))) for row, r in zip(rows, runs, strict=True)]
    if any(r.get("jitter") is not None for r in runs):  # delayed by the task's jitter
        header += ("jitter s",)
        rows = [(*row, _cell(r.get("jitter"))) for row, r in zip(rows, runs, strict=True)]
    header += ("error",)
    rows = [(*row, _cell(r["error"])) for row, r in zip(rows, runs, strict=True)]
    return table(rows, header)


def change_lines(changes: Sequence[audit.Change]) -> list[str]:
    """The ``show`` table of a task's latest changes (the audit), newest first."""
    if not changes:
        return ["No change recorded."]
    rows = [
        (stamp(c.changed_at), printable(c.actor)[:40], c.via, printable(c.describe()))
        for c in changes
    ]
    return table(rows, ("changed at (UTC)", "who", "via", "what"))


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    """A row of ``sisy_health_v1``: a check, whether it passed, whom it names, its figures."""

    name: str
    ok: bool
    subjects: list[str]
    facts: dict[str, Any]


def health_checks(
    max_overdue: float, stalled_after: float, recent: float = HEALTH_RECENT
) -> dict[str, HealthCheck]:
    """Every check of ``sisy_health_v1``, by name: the database decides, Python words it."""
    with connections[procrastinate_seam.database_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT check_name, ok, subjects, facts FROM sisy_health_v1("
            "make_interval(secs => %s), make_interval(secs => %s), make_interval(secs => %s))",
            [stalled_after, max_overdue, recent],
        )
        return {
            name: HealthCheck(
                name, ok, list(subjects), json.loads(facts) if isinstance(facts, str) else facts
            )
            for name, ok, subjects, facts in cursor.fetchall()
        }


def health_problems(
    max_overdue: float, ignore_broken: bool = False, ignore: Collection[str] = ()
) -> tuple[list[str], dict[str, Any]]:
    """Why sisy is unhealthy (empty when healthy), and the facts behind it.

    ``ignore`` names checks that do not count: a liveness probe that restarts
    workers must not fail for what a restart cannot mend -- a broken task's
    row (``ignore_broken``), a pooler's configuration, or overload, which a
    restart makes worse; an alert should leave nothing out.
    """
    stalled_after = procrastinate_seam.stalled_worker_timeout()
    checks = health_checks(max_overdue, stalled_after)
    ignored = {*ignore, *(["broken"] if ignore_broken else [])}
    problems = [
        _health_line(check, stalled_after, max_overdue)
        for check in checks.values()
        if not check.ok and check.name not in ignored
    ]
    workers = checks["workers"].facts
    facts = {
        "live_workers": workers["live_workers"],
        "planners": workers["planners"],
        "stalled_worker_timeout": stalled_after,
        "max_overdue": max_overdue,
        "recent": HEALTH_RECENT,
        # Checks that failed but were told not to count.
        "ignored": [
            check.name for check in checks.values() if not check.ok and check.name in ignored
        ],
        **{
            name: checks[name].subjects
            for name in ("overdue", "broken", "unplanned", "starving", "overrun", "stuck")
        },
        "workers": workers["workers"],
        "load": checks["load"].facts,
        "checks": {
            check.name: {"ok": check.ok, "subjects": check.subjects, "facts": check.facts}
            for check in checks.values()
        },
    }
    return problems, facts


def _health_line(check: HealthCheck, stalled_after: float, max_overdue: float) -> str:
    """One reason line for a failed check of ``sisy_health_v1``."""
    facts, names = check.facts, _names(check.subjects)
    if check.name == "workers":
        if not facts["live_workers"]:
            return (
                f"no live worker (no procrastinate worker heartbeat in the last "
                f"{stalled_after:g} s): nothing plans or runs the tasks"
            )
        queues = "; ".join(_worker_queues(worker) for worker in facts["workers"])
        return (
            f"{facts['live_workers']} live worker(s), none plans the sisy queue (their queues: "
            f"{queues}): no task is fired; start a worker that serves the queue "
            f"{conf.settings.QUEUE!r}"
        )
    if check.name == "unplanned":
        return (
            f"{facts['tasks']} enabled task(s) never planned (no next run {facts['after_seconds']:g} "
            f"s after they were saved, where a planner takes milliseconds): {names}"
        )
    if check.name == "overdue":
        return f"{facts['tasks']} task(s) overdue by more than {max_overdue:g} s: {names}"
    if check.name == "broken":
        return f"{facts['tasks']} task(s) broken: {names}"
    if check.name == "starving":
        return (
            f"{facts['tasks']} task(s) starving (most of their latest instants not run for want "
            f"of a slot or of time: coalesced, missed, late, fair share): {names}"
        )
    if check.name == "overrun":
        return (
            f"{facts['runs']} run(s) still running more than {facts['past_seconds']:g} s past "
            f"their timeout (no planner times them out), of {facts['tasks']} task(s): {names}"
        )
    if check.name == "stuck":
        return (
            f"{facts['runs']} run(s) timed out whose callable never returned, on live workers "
            f"(each holds one of its worker's callable slots), of {facts['tasks']} task(s): {names}"
        )
    if check.name == "slots_full":
        held = [f"{w['name']} ({w['slots_held']} of {w['concurrency']})" for w in facts["workers"]]
        return f"{len(held)} worker(s) with every callable slot held: {_names(held)}"
    if check.name == "slots_stuck":
        stuck = [
            f"{w['name']} ({w['slots_stuck']} of {w['concurrency']})" for w in facts["workers"]
        ]
        return (
            f"{len(stuck)} worker(s) with callable slots held by runs past their timeout whose "
            f"callable never returned: {_names(stuck)}"
        )
    if check.name == "notifications":
        return (
            f"{facts['workers']} worker(s) receive no notifications (degraded: they poll, runs "
            f"start late): {names}; behind a pooler in transaction mode, set "
            "SISY_LISTEN_DATABASE to a direct connection (docs/operations.md#connection-poolers)"
        )
    if check.name == "load":
        return f"overloaded: {liveness.Load(**facts).describe()}"
    return f"{check.name}: {names or _dumps(facts)}"  # a check of a later schema


def _health_ok_line(facts: dict[str, Any]) -> str:
    """``ok: ...``, naming the checks that failed but were ignored."""
    line = f"ok: {facts['live_workers']} live worker(s)"
    if not facts["ignored"]:
        return line + ", no task overdue or broken"
    if "overdue" not in facts["ignored"]:
        line += ", no task overdue"
    notes = [
        f"{facts['checks'][name]['facts']['tasks']} {name}"
        if name in ("overdue", "broken")
        else name
        for name in facts["ignored"]
    ]
    return f"{line}, {', '.join(notes)} (ignored)"


def _worker_queues(worker: dict[str, Any]) -> str:
    if worker["name"] is None:
        return "unknown (no sisy report)"
    return "all" if worker["queues"] is None else ", ".join(worker["queues"])


def _names(labels: Sequence[str]) -> str:
    shown = ", ".join(repr(label[:40]) for label in labels[:HEALTH_LABELS])
    more = len(labels) - HEALTH_LABELS
    return shown + (f" and {more} more" if more > 0 else "")


# --- the command -----------------------------------------------------------------


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


_positive.__name__ = "positive integer"  # argparse's "invalid positive integer value"


class Command(BaseCommand):
    help = (
        "Operate sisy tasks: list, show, next, run, pause, resume, backfill, history, check, "
        "health, metrics."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--as",
            dest="acting_as",
            metavar="USER",
            help="the Django user the changes are recorded for (the audit: via cli)",
        )
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        def action(name: str, help: str, label: bool = False, data: bool = True) -> Any:
            sub = actions.add_parser(name, help=help, description=help)
            if label:
                sub.add_argument("label", metavar="TASK", help="the task's label, or its id")
            if data:
                sub.add_argument(
                    "--json", action="store_true", dest="as_json", help="one JSON document"
                )
            return sub

        action("list", "every task: id, label, state, schedule, next and last run, last outcome")
        action("show", "everything about one task, its next instants and last runs", label=True)
        sub = action("next", "the task's next instants, in its time zone and UTC", label=True)
        sub.add_argument("-n", type=_positive, default=5, help="how many (default 5)")
        action("run", "run the task once, now (then as scheduled)", label=True, data=False)
        sub = action(
            "pause", "disable the task (its queued runs are cancelled)", label=True, data=False
        )
        sub.add_argument("--note", default="", help="why: shown wherever the state is")
        sub.add_argument(
            "--until",
            metavar="WHEN",
            help="when a worker resumes it by itself: 2026-12-24 18:00 (in the task's time "
            "zone), 2026-12-24T17:00Z, or a delay: 90s, 30m, 2h, 1d12h",
        )
        action("resume", "enable the paused task again", label=True, data=False)
        action(
            "clear-error",
            "forget why the broken task broke: a planner plans it again",
            label=True,
            data=False,
        )
        sub = action(
            "backfill",
            "run each past instant of the task's schedule in a range, once (one at a time, "
            "oldest first); instants that ran are not run again",
            label=True,
        )
        sub.add_argument(
            "--from",
            dest="start",
            required=True,
            metavar="WHEN",
            help="the range's start: ISO 8601 (in the task's time zone without an offset), "
            "or a time ago (5m, 2h, 1d)",
        )
        sub.add_argument(
            "--to",
            dest="end",
            default="now",
            metavar="WHEN",
            help="the range's end, included (default and latest: now)",
        )
        sub.add_argument(
            "--limit",
            type=_positive,
            default=None,
            help="the most instants it may run (default and most: SISY_BACKFILL_LIMIT)",
        )
        sub = action("history", "the task's last runs", label=True)
        sub.add_argument("-n", type=_positive, default=20, help="how many (default 20)")
        sub = action("check", "validate a schedule, describe it, show its next instants")
        sub.add_argument("expression", help="a cron schedule, e.g. '*/5 * * * *'")
        sub.add_argument("--tz", default=None, help="time zone (default SISY_DEFAULT_TIMEZONE)")
        sub.add_argument("-n", type=_positive, default=5, help="how many instants (default 5)")
        sub = action(
            "health",
            "exit 0 when a live worker plans, no task is unplanned, late, starving, stuck or "
            "broken, no worker's slots are all held, notifications arrive and nothing is "
            "overloaded",
        )
        sub.add_argument(
            "--max-overdue",
            type=float,
            default=60.0,
            help="seconds past its next run after which a task counts as overdue (default 60)",
        )
        sub.add_argument(
            "--ignore-broken",
            action="store_true",
            help="do not fail for broken tasks (for liveness probes: a restart cannot mend a row)",
        )
        sub.add_argument(
            "--ignore",
            action="append",
            default=[],
            choices=HEALTH_CHECKS,
            metavar="CHECK",
            help="do not fail for this check (repeatable; one of: %(choices)s)",
        )
        action("metrics", "the cluster's metrics, as /sisy/metrics serves them (Prometheus text)")

    def handle(self, *args: Any, action: str, acting_as: str | None = None, **options: Any) -> None:
        handler = getattr(self, f"do_{action.replace('-', '_')}")
        # What it changes is recorded as the CLI's, and --as USER's (docs/audit.md).
        with audit.acting_as(self.user(acting_as), via="cli"):
            handler(**options)

    def user(self, name: str | None) -> Any:
        """The Django user ``--as`` names (None without it)."""
        if name is None:
            return None
        model = get_user_model()
        try:
            return model._default_manager.get_by_natural_key(name)
        except model.DoesNotExist:
            raise CommandError(f"--as {name!r}: no Django user has that username") from None

    # --- output ---

    def out(self, line: str = "") -> None:
        self.stdout.write(line)

    def emit(self, document: Any, lines: Sequence[str], as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(document, indent=2, default=str))
        else:
            for line in lines:
                self.out(line)

    def task(self, name: str) -> Task:
        """The task ``name`` names: its label or, when no task has that label, its id."""
        try:
            with transaction.atomic(), connections[Task.objects.db].cursor() as cursor:
                cursor.execute("SELECT sisy_task_id_v1(%s)", [name])
                task_id = cursor.fetchone()[0]
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "P0002":  # no_data_found
                raise
            raise CommandError(
                f"no task labelled {name!r} (nor with that id): manage.py sisy list shows them"
            ) from None
        task: Task = Task.objects.with_status().get(pk=task_id)
        return task

    def act(self, name: str, action: Action, done: str) -> None:
        task = self.task(name)
        try:
            task.act(action)
        except ActionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.out(f"{task}: {done}")

    # --- subcommands ---

    def do_list(self, as_json: bool = False, **options: Any) -> None:
        tasks = all_tasks()
        self.emit(tasks, list_lines(tasks), as_json)

    def do_show(self, label: str, as_json: bool = False, **options: Any) -> None:
        task = self.task(label)
        zone = schedule.get_timezone(task.timezone)
        instants = upcoming(task, database_now(), 5)
        runs = [run_summary(r) for r in task.runs.order_by("-scheduled_for", "-id")[:10]]
        policy = {
            key: seconds(value) if isinstance(value, dt.timedelta) else value
            for key, value in dataclasses.asdict(task.policy).items()
        }
        document = {
            **task_summary(task),
            "description": describe(task.schedule),
            "callable": task.callable_info,
            "enabled": task.enabled,
            "start_running": iso(task.start_running),
            "end_running": iso(task.end_running),
            "iterations": task.iterations,
            "fire_count": task.fire_count,
            "wait_for_schedule": task.wait_for_schedule,
            "allow_overlap": task.allow_overlap,
            "userdata": task.userdata,
            "options": task.options,
            "policy": policy,
            "finished_at": iso(task.finished_at),
            "created_at": iso(task.created_at),
            "modified_at": iso(task.modified_at),
            "next_instants": instant_pairs(instants, task.timezone),
            "runs": runs,
        }
        fields = [
            ("id", task.pk),
            ("label", printable(task.label)),
            ("state", task.state),
            ("error", task.error),
            ("callable", task.callable_path),
            ("callable info", _dumps(task.callable_info)),
            ("schedule", f"{task.schedule}  ({document['description']})"),
            ("timezone", task.timezone),
            ("enabled", task.enabled),
            ("start running", iso(task.start_running, zone)),
            ("end running", iso(task.end_running, zone)),
            ("iterations", f"{task.iterations or 'forever'} (fired {task.fire_count})"),
            ("wait for schedule", task.wait_for_schedule),
            ("userdata", _dumps(task.userdata)),
            ("options", _dumps(task.options)),
            ("policy", ", ".join(f"{k}={_cell(v)}" for k, v in policy.items())),
            ("next run", iso(task.next_run, zone)),
            ("last run", iso(task.last_run, zone)),
            ("last outcome", task.last_outcome),
            ("finished at", iso(task.finished_at, zone)),
            ("created at", iso(task.created_at, zone)),
            ("modified at", iso(task.modified_at, zone)),
        ]
        pause = task.pause_info
        if pause is not None:
            until = iso(pause.until, zone)
            fields[3:3] = [
                ("pause note", printable(pause.note)),
                ("paused until", f"{until}, then resumes by itself" if until else "-"),
                ("paused by", f"{printable(pause.paused_by)} at {iso(pause.paused_at, zone)}"),
            ]
        lines = [f"{name + ':':<19}{_cell(value)}" for name, value in fields]
        lines.append(f"(times in {task.timezone})")
        lines += ["", "next instants of its schedule:"]
        lines += [f"  {i['local']}  ({i['utc']})" for i in document["next_instants"]] or ["  none"]
        lines += ["", "last runs:"]
        lines += ["  " + line for line in history_lines(runs)]
        changes = audit.recent(task.pk)
        document["changes"] = [change.as_dict() for change in changes]
        lines += ["", "last changes:"]
        lines += ["  " + line for line in change_lines(changes)]
        self.emit(document, lines, as_json)

    def do_next(self, label: str, n: int, as_json: bool = False, **options: Any) -> None:
        task = self.task(label)
        instants = instant_pairs(upcoming(task, database_now(), n), task.timezone)
        document = {"label": task.label, "timezone": task.timezone, "instants": instants}
        lines = table([(i["local"], i["utc"]) for i in instants], (task.timezone, "UTC"))
        if not instants:
            lines = ["No instant left: the task's window or iterations are used up."]
        elif task.state == TaskState.PAUSED and (pause := task.pause_info) and pause.until:
            until = iso(pause.until, schedule.get_timezone(task.timezone))
            lines.append(f"(the task is paused until {until}: those before will not fire)")
        elif task.state in (TaskState.PAUSED, TaskState.FINISHED, TaskState.BROKEN):
            lines.append(f"(the task is {task.state}: these instants will not fire)")
        self.emit(document, lines, as_json)

    def do_run(self, label: str, **options: Any) -> None:
        self.act(
            label, Action.RUN_NOW, "runs now (a worker's planner fires it), then as scheduled."
        )

    def do_pause(
        self, label: str, note: str = "", until: str | None = None, **options: Any
    ) -> None:
        if not note and until is None:
            self.act(
                label,
                Action.PAUSE,
                "paused (its waiting runs are cancelled); resume it with 'sisy resume'.",
            )
            return
        task = self.task(label)
        zone = schedule.get_timezone(task.timezone)
        try:
            end = None if until is None else parse_when(until, zone)
        except ValueError as exc:
            raise CommandError(f"--until {until!r}: {exc}") from None
        try:
            task.pause(note=note, until=end)
        except ValueError as exc:  # ActionRefused, an end past, a note too long
            raise CommandError(str(exc)) from exc
        pause = task.pause_info
        then = "resume it with 'sisy resume'"
        if pause is not None and pause.until is not None:
            then = (
                f"a worker resumes it by itself at {iso(pause.until, zone)} ({task.timezone}), "
                "or 'sisy resume' earlier"
            )
        said = f"; note: {printable(note)!r}" if note else ""
        self.out(f"{task}: paused (its waiting runs are cancelled){said}; {then}.")

    def do_resume(self, label: str, **options: Any) -> None:
        self.act(label, Action.RESUME, "resumed; a worker's planner plans its next run now.")

    def do_clear_error(self, label: str, **options: Any) -> None:
        self.act(
            label,
            Action.CLEAR_ERROR,
            "error cleared; a worker's planner plans it again (it breaks again at its next "
            "run if the cause remains).",
        )

    def do_backfill(
        self,
        label: str,
        start: str,
        end: str,
        limit: int | None = None,
        as_json: bool = False,
        **options: Any,
    ) -> None:
        task = self.task(label)
        zone, now = schedule.get_timezone(task.timezone), database_now()
        try:
            first = backfill.parse_when(start, zone, now)
            last = backfill.parse_when(end, zone, now)
            if first > now:
                raise ValueError(
                    f"--from {stamp(first)} is still to come: a backfill runs past instants"
                )
            if first > last:
                raise ValueError(f"--from {stamp(first)} is after --to {stamp(last)}")
            done = backfill.backfill(task.pk, first, last, limit=limit, using=Task.objects.db)
        except (ValueError, LookupError) as exc:  # refused, too long, a bad WHEN, gone
            raise CommandError(str(exc)) from exc
        document = {
            **dataclasses.asdict(done),
            "range_from": iso(done.range_from),
            "range_to": iso(done.range_to),
        }
        self.emit(document, [done.describe()], as_json)

    def do_history(self, label: str, n: int, as_json: bool = False, **options: Any) -> None:
        task = self.task(label)
        runs = [run_summary(r) for r in task.runs.order_by("-scheduled_for", "-id")[:n]]
        self.emit({"label": task.label, "runs": runs}, history_lines(runs), as_json)

    def do_check(
        self, expression: str, tz: str | None, n: int, as_json: bool = False, **options: Any
    ) -> None:
        zone_name = tz or conf.settings.default_timezone
        try:
            normalised = schedule.validate_schedule(expression)
            schedule.get_timezone(zone_name)
        except schedule.ScheduleError as exc:
            raise CommandError(str(exc)) from exc
        warning = seconds_first_warning(normalised)
        instants = instant_pairs(instants_of(normalised, zone_name, database_now(), n), zone_name)
        document = {
            "schedule": normalised,
            "description": describe(normalised),
            "timezone": zone_name,
            "warning": warning,
            "instants": instants,
        }
        if warning and not as_json:
            self.stderr.write(f"warning: {warning}")
        lines = [f"{normalised}: {document['description']}", ""]
        lines += table([(i["local"], i["utc"]) for i in instants], (zone_name, "UTC"))
        self.emit(document, lines, as_json)

    def do_health(
        self,
        max_overdue: float,
        ignore_broken: bool = False,
        ignore: Sequence[str] = (),
        as_json: bool = False,
        **options: Any,
    ) -> None:
        problems, facts = health_problems(max_overdue, ignore_broken, ignore)
        if as_json:
            self.emit({"ok": not problems, "problems": problems, **facts}, [], True)
        if problems:
            raise CommandError("unhealthy: " + "; ".join(problems))
        if not as_json:
            self.out(_health_ok_line(facts))

    def do_metrics(self, as_json: bool = False, **options: Any) -> None:
        from sisy_pg import metrics

        if as_json:
            self.emit(metrics.as_json(metrics.families(metrics.read())), [], True)
        else:
            self.stdout.write(metrics.exposition()[0].decode(), ending="")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
