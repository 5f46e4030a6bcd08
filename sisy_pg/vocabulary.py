"""The words sisy-pg and its SQL share: run statuses, reasons, task states, actions, refusals.

Each is spelled once in Python, here, and once in ``sql/schema.sql`` (its
constraints and functions); ``tests/integration/test_vocabulary.py`` keeps the two equal.
No database, no Django settings: pure logic imports these too.
"""

from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    """A run's ``status`` (constraint ``sisy_taskrun_status_known``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out", "Timed out"
    SKIPPED = "skipped"
    MISSED = "missed"
    CANCELLED = "cancelled"


# The statuses of a run that has ended (or was never run): final, kept by retention.
FINAL_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.TIMED_OUT,
    RunStatus.SKIPPED,
    RunStatus.MISSED,
    RunStatus.CANCELLED,
)
# The outcomes that make a task "failing".
FAILING_STATUSES = (RunStatus.FAILED, RunStatus.TIMED_OUT)


class Reason(models.TextChoices):
    """Why a run ended as it did, or why an instant was not run (``details.reason``)."""

    LATE = "late", "reached a worker later than the task's grace"
    MISSED = "missed", "could not start within the task's grace"
    COALESCED = "coalesced", "coalesced into a run still waiting to start"
    OVERLAP = "overlap", "another run of the task was running"
    BACKLOG = "backlog", "too many runs of the task waiting"
    BROKEN = "broken", "the task is broken"
    TIMED_OUT = "timed_out", "ran past the task's timeout"
    WORKER_LOST = "worker_lost", "its worker stopped without reporting"
    NOT_STARTED = "not_started", "its job ended before the run began"
    DISABLED = "disabled", "the task was paused"
    FAIR_SHARE = "fair_share", "its task held its share of the worker's callable slots"
    INTERRUPTED = "interrupted", "its worker stopped before the callable returned"


class NotStarted(models.TextChoices):
    """What ``sisy_start_run_v1`` answers, besides a run's status, for a run it did not start."""

    BUSY = "busy", "another transaction holds the run's row: try again"
    EARLY = "early", "its instant is still to come on the database's clock: try again"
    MISSING = "missing", "the run is gone"
    STARTED_ELSEWHERE = "started_elsewhere", "it is running under another job"
    BROKEN = "broken", "its task's row is beyond sisy's limits: the task is broken"


class TaskState(models.TextChoices):
    """A task's state, as ``sisy_task_state_v1`` decides it (in this order of precedence)."""

    BROKEN = "broken", "broken"
    FINISHED = "finished", "finished"
    PAUSED = "paused", "paused"
    RUNNING = "running", "running"
    FAILING = "failing", "failing"
    UNPLANNED = "unplanned", "never planned"
    SCHEDULED = "scheduled", "scheduled"


class Action(models.TextChoices):
    """What an operator can do to a task (``sisy_act_v1``), from any edge."""

    RUN_NOW = "run_now", "run now"
    PAUSE = "pause", "pause"
    RESUME = "resume", "resume"
    CLEAR_ERROR = "clear_error", "clear error"


class Refusal(models.TextChoices):
    """Why ``sisy_act_v1`` left a task alone; the label is how users are told."""

    BROKEN = "broken", "broken (mend its definition or clear its error first)"
    FINISHED = (
        "finished",
        (
            "finished (its iterations are used up or its end_running has passed; "
            "change them to run it again)"
        ),
    )
    PAUSED = "paused", "paused (resume it first)"
    ALREADY_PAUSED = "already_paused", "already paused"
    NOT_PAUSED = "not_paused", "not paused"
    NOT_BROKEN = "not_broken", "not broken: it has no error to clear"


# The policies' defaults (sisy_pg.policies; sql: sisy_policy_v1), but grace,
# which is the setting SISY_GRACE.
MISSED_POLICIES = ("coalesce", "skip", "all")
OVERLAP_POLICIES = ("allow", "skip", "buffer_one")
DEFAULT_MISSED = "coalesce"
DEFAULT_OVERLAP = "allow"
DEFAULT_RETRIES = 0
DEFAULT_RETRY_DELAY = 10.0


# What sisy's functions raise for an argument they refuse (RAISE ... USING ERRCODE =
# 'invalid_parameter_value'), with a message that begins "sisy: ".
INVALID_PARAMETER = "22023"


def invalid_parameter(error: BaseException) -> str | None:
    """The message of a sisy function's refusal of an argument, if ``error`` (a Django
    DatabaseError) is one: the error for a person, without the SQL around it."""
    cause = error.__cause__
    if getattr(cause, "sqlstate", None) != INVALID_PARAMETER:
        return None
    return str(cause).splitlines()[0].removeprefix("sisy: ")
