"""The runner's line per run (docs/operations.md, "Per-run log lines"): level, action, fields.

Log shippers key on ``action`` and the fields of ``extra``; a failing
callable's traceback is in exactly one line, at the level the table says.
"""

import datetime as dt
import logging
import types

import pytest

from sisy_pg.models import Task
from sisy_pg.runner import Outcome, _RunLog
from sisy_pg.store import StartedRun
from sisy_pg.vocabulary import RunStatus

UTC = dt.timezone.utc
INSTANT = dt.datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
LAG = dt.timedelta(milliseconds=12, microseconds=345)
RETRY_AT = INSTANT + dt.timedelta(seconds=10)
ERROR = RuntimeError("boom")


def run_log(outcome, label="nightly report"):
    task = Task(pk=7, label=label)
    started = StartedRun(
        run_id=3, status="running", scheduled_for=INSTANT, attempt=2, started_at=INSTANT + LAG,
        wait=None, task=task,
    )  # fmt: skip
    return _RunLog(3, task, started, outcome)


SUCCEEDED = Outcome(RunStatus.SUCCEEDED, duration=0.25)
FAILED = Outcome(RunStatus.FAILED, duration=0.25, exception=ERROR, traceback="Traceback ...")
RESULT = types.SimpleNamespace(id="result-1", backend="default")

LINES = [
    # (what the runner says, its level, action, status, whether the traceback is in it)
    pytest.param(
        SUCCEEDED, lambda log: log.ended(RunStatus.SUCCEEDED), logging.INFO, "run_succeeded",
        RunStatus.SUCCEEDED, False, id="succeeded",
    ),
    pytest.param(
        FAILED, lambda log: log.ended(RunStatus.FAILED), logging.ERROR, "run_failed",
        RunStatus.FAILED, True, id="failed",
    ),
    pytest.param(
        FAILED, lambda log: log.retrying(RETRY_AT), logging.WARNING, "run_retry",
        RunStatus.QUEUED, True, id="retrying",
    ),
    pytest.param(
        FAILED, lambda log: log.broken("gone", first=True), logging.ERROR, "task_broken",
        RunStatus.FAILED, False, id="broken: said once",
    ),
    pytest.param(
        FAILED, lambda log: log.broken("gone", first=False), logging.INFO, "run_failed",
        RunStatus.FAILED, False, id="already broken: news to no one",
    ),
    pytest.param(
        FAILED, lambda log: log.returned_late(RunStatus.FAILED), logging.WARNING,
        "run_returned_late", RunStatus.TIMED_OUT, True, id="returned late, raising",
    ),
    pytest.param(
        SUCCEEDED, lambda log: log.returned_late(RunStatus.SUCCEEDED), logging.WARNING,
        "run_returned_late", RunStatus.TIMED_OUT, False, id="returned late",
    ),
    pytest.param(
        SUCCEEDED, lambda log: log.enqueued(RESULT), logging.INFO, "run_enqueued",
        RunStatus.RUNNING, False, id="enqueued its Django task",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("outcome", "say", "level", "action", "status", "traceback"), LINES)
def test_each_outcome_is_one_line_with_its_level_action_status_and_fields(
    caplog, outcome, say, level, action, status, traceback
):
    with caplog.at_level(logging.DEBUG, "sisy_pg.runner"):
        say(run_log(outcome))
    (line,) = caplog.records
    assert (line.levelno, line.action, line.status) == (level, action, status)
    assert (line.exc_info is not None) is traceback
    if traceback:
        assert line.exc_info[1] is ERROR
    fields = {name: getattr(line, name) for name in run_log(outcome).extra}
    assert fields == {
        "run_id": 3,
        "task_id": 7,
        "task": "nightly report",
        "scheduled_for": INSTANT.isoformat(),
        "attempt": 2,
        "lag_ms": LAG.total_seconds() * 1000,
        "duration_ms": outcome.duration * 1000,
    }


def test_a_label_with_control_characters_is_escaped_in_the_line(caplog):
    with caplog.at_level(logging.INFO, "sisy_pg.runner"):
        run_log(SUCCEEDED, label="forged\nERROR line").ended(RunStatus.SUCCEEDED)
    (line,) = caplog.records
    assert "\n" not in line.getMessage() and "forged\\nERROR line" in line.getMessage()
    assert line.task == "forged\\nERROR line"


def test_a_retry_says_when_and_which_attempt_failed(caplog):
    with caplog.at_level(logging.INFO, "sisy_pg.runner"):
        run_log(FAILED).retrying(RETRY_AT)
    (line,) = caplog.records
    assert line.retry_at == RETRY_AT.isoformat()
    assert "attempt 2 failed" in line.getMessage() and RETRY_AT.isoformat() in line.getMessage()
