"""What happens to a due instant: the per-task policies, and the decision they make.

Pure logic, no database. The planner claims the due tasks
(``sisy_claim_due_v1``), asks :func:`decide` what to do with each one's
instant, and records every decision (``sisy_store_decisions_v1``): a run to
execute, or a row saying why an instant is not run. The same policies are
applied again when a queued run reaches a worker (``sisy_start_run_v1``).

The policies live in ``Task.options`` (docs/reliability.md):

- ``missed``: what to do with instants that could not start on time
  (workers stopped or busy, long runs, a locked row, a restored database).
  ``coalesce`` (default): only the latest instant due runs (a catch-up run
  when it is past its ``grace``), the older ones are one 'missed' record,
  then on schedule; at most one run waits to start, and a fire that finds
  one waiting is recorded as coalesced into it. ``skip``: the same, but the
  latest runs only within its grace. ``all``: every one runs, the latest
  SISY_MISSED_ALL_LIMIT at most.
- ``overlap``: ``allow`` (default), ``skip`` (Sisy's ``allow_overlap=False``),
  ``buffer_one`` (one run waits and starts when the running one ends).
- ``timeout``, ``retries`` and ``retry_delay`` (applied by the runner).
- ``priority``: procrastinate's job priority of the task's runs (higher
  first), and the order in which the planner claims the tasks due.
- ``jitter``: each run of an instant of the schedule starts a delay in
  [0, jitter] seconds after it (:func:`jitter_delay`: the same for every
  planner), so that tasks sharing an instant do not all start at once.
- ``queue``: the procrastinate queue of the task's runs, so that workers of
  their own run them (docs/jitter-and-queues.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import re
from typing import Any

from . import conf, schedule
from .vocabulary import (
    DEFAULT_MISSED,
    DEFAULT_OVERLAP,
    DEFAULT_RETRIES,
    DEFAULT_RETRY_DELAY,
    MISSED_POLICIES,
    OVERLAP_POLICIES,
    Reason,
    RunStatus,
)

# The keys of Task.options, with what each must be.
OPTIONS = {
    "missed": f"one of {', '.join(MISSED_POLICIES)}",
    "overlap": f"one of {', '.join(OVERLAP_POLICIES)}",
    "grace": "a number of seconds, from 0 to 315360000 (ten years)",
    "timeout": "a number of seconds, more than 0 and at most 315360000 (ten years)",
    "retries": "a whole number from 0 to 100",
    "retry_delay": "a number of seconds, more than 0 and at most 315360000 (ten years)",
    "priority": "a whole number from -100 to 100",
    "jitter": "a number of seconds, from 0 to 86400 (a day)",
    "queue": "a procrastinate queue name: 1 to 40 ASCII letters, digits, '_', '-', '.' or ':'",
}
MAX_RETRIES = 100
MAX_PRIORITY = 100  # and -MAX_PRIORITY: room enough to rank tasks, and as in SQL
DEFAULT_PRIORITY = 0
MAX_SECONDS = 315_360_000  # ten years: beyond, a setting is a mistake (and overflows dates)
MAX_JITTER = 86_400  # a day: a longer spread is a schedule of its own
# procrastinate notifies a channel named after the queue (a 23-character prefix, then the
# name), and PostgreSQL refuses one of 64 bytes or more: 40 ASCII characters (as in SQL).
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,40}", re.ASCII)


def _is_seconds(value: Any) -> bool:
    """A JSON number of seconds that a timedelta can hold (ints may be huge, floats NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (isinstance(value, int) or math.isfinite(value)) and abs(value) <= MAX_SECONDS


def _option_ok(key: str, value: Any) -> bool:
    if value is None:  # the default, as in SQL (sisy_task_options_valid)
        return True
    if key == "missed":
        return value in MISSED_POLICIES
    if key == "overlap":
        return value in OVERLAP_POLICIES
    if key == "queue":
        return isinstance(value, str) and QUEUE_NAME.fullmatch(value) is not None
    if not _is_seconds(value):
        return False
    if key == "grace":
        return bool(value >= 0)
    if key == "retries":
        return bool(value == int(value) and 0 <= value <= MAX_RETRIES)
    if key == "priority":
        return bool(value == int(value) and -MAX_PRIORITY <= value <= MAX_PRIORITY)
    if key == "jitter":
        return bool(0 <= value <= MAX_JITTER)
    return bool(value > 0)  # timeout, retry_delay


def options_errors(options: Any) -> list[str]:
    """What is wrong with a value of ``Task.options``, one message per key."""
    if not isinstance(options, dict):
        return [f"options must be a dict, not {type(options).__name__}"]
    errors = []
    for key, value in options.items():
        if key not in OPTIONS:
            errors.append(f"options: unknown key {key!r} (known: {', '.join(OPTIONS)})")
        elif not _option_ok(key, value):
            errors.append(f"options[{key!r}] must be {OPTIONS[key]}, not {value!r}")
    return errors


@dataclasses.dataclass(frozen=True)
class Policy:
    """A task's policies, defaults filled in."""

    missed: str = DEFAULT_MISSED
    overlap: str = DEFAULT_OVERLAP
    grace: dt.timedelta = dt.timedelta(seconds=60)
    timeout: float | None = None
    retries: int = DEFAULT_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    priority: int = DEFAULT_PRIORITY
    jitter: float = 0.0
    queue: str | None = None  # None: SISY_QUEUE

    @classmethod
    def of(cls, options: dict[str, Any], allow_overlap: bool) -> Policy:
        """The policy of a task row; an ``overlap`` option wins over ``allow_overlap``."""
        grace = options.get("grace")
        return cls(
            missed=options.get("missed") or DEFAULT_MISSED,
            overlap=options.get("overlap") or (DEFAULT_OVERLAP if allow_overlap else "skip"),
            grace=dt.timedelta(seconds=conf.settings.GRACE if grace is None else grace),
            timeout=options.get("timeout"),
            retries=int(options.get("retries") or DEFAULT_RETRIES),
            retry_delay=float(options.get("retry_delay") or DEFAULT_RETRY_DELAY),
            priority=int(options.get("priority") or DEFAULT_PRIORITY),
            jitter=float(options.get("jitter") or 0.0),
            queue=options.get("queue") or None,
        )

    def retry_in(self, attempt: int) -> float | None:
        """Seconds to wait before retrying failed attempt ``attempt`` (1 for the first), or None.

        Exponential backoff: ``retry_delay``, then twice that, four times...
        """
        if attempt > self.retries:
            return None
        return float(self.retry_delay * 2 ** (attempt - 1))


@dataclasses.dataclass(frozen=True)
class OtherRun:
    """A run of the same task that a fire may have to make way for."""

    run_id: int
    instant: dt.datetime
    count: int = 1  # waiting runs: how many there are


@dataclasses.dataclass(frozen=True)
class Due:
    """A claimed task and its instant due, as sisy_claim_due_v1 returns it."""

    task_id: int
    plan_input: schedule.PlanInput
    policy: Policy
    instant: dt.datetime
    claimed_at: dt.datetime  # the database's clock
    waiting: OtherRun | None = None  # its earliest run waiting to start
    running: OtherRun | None = None  # its latest run executing on a live worker


@dataclasses.dataclass(frozen=True)
class Record:
    """A row of the run history: a run to execute ('queued') or an instant not run."""

    instant: dt.datetime
    status: RunStatus  # queued, skipped or missed
    error: str = ""
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Decision:
    records: list[Record]
    plan: schedule.Plan

    @property
    def fired(self) -> Record | None:
        return next((r for r in self.records if r.status == RunStatus.QUEUED), None)


def _at(instant: dt.datetime) -> str:
    return instant.isoformat()


def decide(due: Due, *, lead: dt.timedelta, all_limit: int) -> Decision:
    """What to do with ``due.instant``; may raise ScheduleError for a task that cannot be planned.

    ``lead`` is how far ahead the planner claims: an instant due within it
    counts as due now. ``all_limit`` caps the catch-up of missed='all'.

    Whatever held the task back (workers stopped, a locked row, a restored
    database, overload), only the latest instant due may run unless the
    policy is missed='all': the older ones are one 'missed' record, so that
    a stall is never replayed instant after instant.
    """
    policy, task = due.policy, due.plan_input
    records: list[Record] = []
    fire: dt.datetime | None = due.instant
    details: dict[str, Any] = {}
    last_dealt_with = due.instant
    now = due.claimed_at + lead
    if task.end_running is not None:
        now = min(now, task.end_running)
    beyond_grace = due.instant < due.claimed_at - policy.grace
    if beyond_grace or (
        # Within its grace, but already past and overtaken by a later instant
        # (not an instant off the schedule: a writer asked for a run then).
        policy.missed != "all"
        and due.instant < due.claimed_at
        and schedule.next_after(task.schedule, task.timezone, due.instant) <= now
        and _previous(task, due.instant + dt.timedelta(microseconds=1), due.instant) == due.instant
    ):
        # The policy deals with every instant due by now at once.
        latest = _last_up_to(task, now, due.instant)
        if policy.missed == "all":
            fire = _first_of_latest(task, due.instant, now, all_limit)
            details = {"catch_up": True, "due_at": _at(due.claimed_at)}
        elif latest >= due.claimed_at - policy.grace:
            fire = latest  # the latest is on time: it runs, as any fire
        elif policy.missed == "coalesce":
            fire = latest
            details = {"catch_up": True, "due_at": _at(due.claimed_at)}
        else:
            fire = None
        if fire is None:
            through: dt.datetime | None = latest
        elif fire > due.instant:  # due.instant at least is not run
            through = _previous(task, fire, due.instant) or due.instant
        else:
            through = None
        if through is not None:
            records.append(_missed(due, through, fire, beyond_grace))
        last_dealt_with = latest if fire is None else fire

    fired = False
    if fire is not None:
        record = _make_way(due, fire, details, all_limit)
        if record.status == RunStatus.QUEUED and policy.jitter > 0:
            record = _jittered(due, record)
        records.append(record)
        fired = record.status == RunStatus.QUEUED
    if fired:
        task = dataclasses.replace(task, fire_count=task.fire_count + 1)
    return Decision(records=records, plan=schedule.plan_after(task, last_dealt_with))


def jitter_delay(task_id: int, instant: dt.datetime, jitter: float) -> float:
    """The delay of the run of ``instant``, in [0, ``jitter``] seconds, to the millisecond.

    Derived from the task and the instant alone, not drawn: every planner
    that decides the instant, now or again later, picks the same delay, and
    the tasks that share an instant are spread evenly over the jitter.
    """
    if jitter <= 0:
        return 0.0
    key = f"{task_id} {instant.timestamp():.6f}".encode()
    fraction = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64
    return round(fraction * jitter, 3)


def _jittered(due: Due, record: Record) -> Record:
    """The run delayed by its jitter: ``details.jitter``, and ``details.due_at`` that much later.

    Only an instant of the schedule: a run asked for now (``next_run`` set
    by a writer) starts now. The planner holds the run, without a job,
    until its ``due_at`` is within its lead time (sisy_release_jittered_runs_v1).
    """
    task, instant = due.plan_input, record.instant
    if _previous(task, instant + dt.timedelta(microseconds=1), instant) != instant:
        return record
    delay = jitter_delay(due.task_id, instant, due.policy.jitter)
    base = record.details.get("due_at")
    start = dt.datetime.fromisoformat(base) if base else instant
    details = {
        **record.details,
        "jitter": delay,
        "due_at": _at(start + dt.timedelta(seconds=delay)),
    }
    return dataclasses.replace(record, details=details)


def _last_up_to(
    task: schedule.PlanInput, until: dt.datetime, not_before: dt.datetime
) -> dt.datetime:
    """The latest instant in ``[not_before, until]``."""
    latest = schedule.last_before(
        task.schedule, task.timezone, until + dt.timedelta(microseconds=1), not_before=not_before
    )
    return latest or not_before


def _previous(
    task: schedule.PlanInput, instant: dt.datetime, not_before: dt.datetime
) -> dt.datetime | None:
    return schedule.last_before(task.schedule, task.timezone, instant, not_before=not_before)


def _first_of_latest(
    task: schedule.PlanInput, first: dt.datetime, until: dt.datetime, limit: int
) -> dt.datetime:
    """The earliest of the ``limit`` latest instants in ``[first, until]``."""
    instant = first
    for _ in range(limit):  # usually fewer: the latest are all there is
        instant = schedule.next_after(task.schedule, task.timezone, instant)
        if instant > until:
            return first
    earliest = until + dt.timedelta(microseconds=1)
    for _ in range(limit):
        previous = _previous(task, earliest, first)
        if previous is None:
            break
        earliest = previous
    return earliest


def _missed(due: Due, through: dt.datetime, fire: dt.datetime | None, beyond_grace: bool) -> Record:
    grace = due.policy.grace.total_seconds()
    if fire is None:
        outcome = "none is run"
    elif due.policy.missed == "all":
        outcome = f"catching up from {_at(fire)} (the latest SISY_MISSED_ALL_LIMIT at most)"
    else:
        outcome = f"only the latest, {_at(fire)}, runs"
    span = _at(due.instant) if through == due.instant else f"{_at(due.instant)} to {_at(through)}"
    if beyond_grace:
        why = f"could not start within the grace of {grace:g} s (workers stopped or busy)"
    else:
        # Within the grace, but a later instant is due already: a stall (a
        # locked row, a restored database, overload) is not replayed.
        why = (
            "could not start before a later instant was due "
            "(workers stopped or busy, or the task's row locked)"
        )
    return Record(
        instant=due.instant,
        status=RunStatus.MISSED,
        error=f"missed: {span} {why}; policy {due.policy.missed}: {outcome}",
        details={"reason": Reason.MISSED, "through": _at(through), "policy": due.policy.missed},
    )


def _make_way(due: Due, fire: dt.datetime, details: dict[str, Any], all_limit: int) -> Record:
    """The run for ``fire``, or why it is not run: a run waiting or running before it."""
    policy, waiting, running = due.policy, due.waiting, due.running
    if policy.overlap == "skip" and (running or waiting):
        other = running or waiting
        assert other is not None
        state = "running" if running else "waiting to start"
        return Record(
            fire,
            RunStatus.SKIPPED,
            f"overlap: run {other.run_id} (for {_at(other.instant)}) is still {state} "
            "and the task does not allow overlap",
            {"reason": Reason.OVERLAP, "overlapped_run": other.run_id},
        )
    if policy.overlap == "buffer_one" and running and not waiting:
        return Record(
            fire, RunStatus.QUEUED, details={**details, "buffered_behind": running.run_id}
        )
    if waiting and (policy.missed != "all" or policy.overlap == "buffer_one"):
        return Record(
            fire,
            RunStatus.SKIPPED,
            f"coalesced: run {waiting.run_id} (for {_at(waiting.instant)}) is still waiting "
            "to start",
            {"reason": Reason.COALESCED, "into_run": waiting.run_id},
        )
    if waiting and waiting.count >= all_limit:
        return Record(
            fire,
            RunStatus.SKIPPED,
            f"backlog: {waiting.count} runs of this task are waiting to start "
            f"(SISY_MISSED_ALL_LIMIT is {all_limit})",
            {"reason": Reason.BACKLOG, "waiting": waiting.count},
        )
    return Record(fire, RunStatus.QUEUED, details=details)
