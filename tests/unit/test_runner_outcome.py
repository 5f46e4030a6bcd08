"""How a run's call ends and what the runner records of it, decided without a database.

``_call`` runs in a callable thread: it resolves the task's callable and calls
it, and whatever happens is an ``Outcome``, never an exception (one would
leave the run 'running'). The callables are this module's functions, allowed
by ``SISY_ALLOWED_CALLABLES`` for these tests.
"""

import concurrent.futures
import datetime as dt
import types

import pytest

from sisy_pg import callables, task_targets
from sisy_pg.models import Task
from sisy_pg.policies import Policy
from sisy_pg.runner import (
    ENQUEUED,
    _call,
    _error_text,
    _given_up_after,
    _message,
    _retry_in,
    _tally,
)
from sisy_pg.store import StartedRun
from sisy_pg.vocabulary import RunStatus

UTC = dt.timezone.utc
INSTANT = dt.datetime(2026, 5, 5, 10, 0, 30, 250000, tzinfo=UTC)
called = []  # what the callables below were given


@pytest.fixture(autouse=True)
def allowed(settings):
    settings.SISY_ALLOWED_CALLABLES = [__name__]
    called.clear()


def returns(message):
    called.append(message)
    return "ignored"


def raises(message):
    raise LookupError("no such row")


def exits(message):
    raise SystemExit(3)


async def awaited(message):
    called.append(message)


async def raises_when_awaited(message):
    raise LookupError("no such row, asynchronously")


ENQUEUE = task_targets.Enqueued(result=types.SimpleNamespace(id="r1"), recorded=True)


def enqueues(message):
    return ENQUEUE


def call(func, message=None):
    return call_info(callables.describe(func), message)


def call_info(info, message=None, **kwargs):
    """``_call`` in a thread of its own, as the runner's callable threads: Django's
    connections are per thread, so its connection hygiene sees none (a test of another tier
    may have left this thread's open, and the unit tier has no database to ask)."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(
            _call, info, message or {"task": Task(pk=1)}, "default", **kwargs
        ).result()


def test_a_callable_that_returns_succeeded_with_its_message():
    message = {"task": Task(pk=1), "message": {"run_id": 5}}
    outcome = call(returns, message)
    assert (outcome.status, outcome.exception, outcome.traceback) == (RunStatus.SUCCEEDED, None, "")
    assert called == [message] and outcome.duration >= 0


def test_a_callable_that_raises_failed_with_its_exception_and_traceback():
    outcome = call(raises)
    assert outcome.status == RunStatus.FAILED
    assert isinstance(outcome.exception, LookupError)
    assert "in raises" in outcome.traceback and "LookupError: no such row" in outcome.traceback


def test_a_callable_that_exits_its_thread_failed_too():
    outcome = call(exits)
    assert outcome.status == RunStatus.FAILED and isinstance(outcome.exception, SystemExit)


def test_an_async_callable_is_awaited_before_it_succeeds():
    outcome = call(awaited)
    assert outcome.status == RunStatus.SUCCEEDED and len(called) == 1


def test_an_async_callable_that_raises_when_awaited_failed():
    outcome = call(raises_when_awaited)
    assert outcome.status == RunStatus.FAILED and isinstance(outcome.exception, LookupError)


def test_a_django_task_s_enqueue_is_followed_not_finished():
    outcome = call(enqueues)
    assert outcome.status == ENQUEUED and outcome.enqueued is ENQUEUE


def test_a_callable_that_cannot_be_resolved_breaks_its_task_before_any_call():
    info = {**callables.describe(returns), "func_path": f"{__name__}.gone"}
    announced = []
    outcome = call_info(info, announce=lambda: announced.append(1))
    assert outcome.status == "broken" and isinstance(outcome.exception, callables.CallableError)
    assert "gone" in str(outcome.exception) and outcome.traceback
    assert called == [] and announced == [1]  # run_started is sent whatever happens next


def test_a_callable_no_longer_allowed_breaks_its_task(settings):
    info = callables.describe(returns)
    settings.SISY_ALLOWED_CALLABLES = ["somewhere.else"]
    outcome = call_info(info)
    assert outcome.status == "broken" and isinstance(outcome.exception, callables.CallableRefused)
    assert called == []


# --- what is recorded of a failure -------------------------------------------------------

RETRIES = Policy(retries=2, retry_delay=10.0)


@pytest.mark.parametrize(
    ("exc", "attempt", "retry_in"),
    [
        pytest.param(RuntimeError("x"), None, RETRIES.retry_in(1), id="a run's first attempt"),
        pytest.param(RuntimeError("x"), 1, RETRIES.retry_in(1), id="first attempt"),
        pytest.param(RuntimeError("x"), 2, RETRIES.retry_in(2), id="second attempt"),
        pytest.param(RuntimeError("x"), 3, None, id="no retry left"),
        pytest.param(SystemExit(1), 1, None, id="an exit is not retried"),
        pytest.param(KeyboardInterrupt(), 1, None, id="an interrupt is not retried"),
        pytest.param(
            task_targets.EnqueueUncertain("maybe taken"),
            1,
            None,
            id="an enqueue that may have taken its task is not retried",
        ),
    ],
)
def test_a_failed_attempt_is_retried_while_retries_are_left(exc, attempt, retry_in):
    assert retry_in is None or retry_in > 0
    assert _retry_in(RETRIES, exc, attempt) == retry_in


def test_a_task_without_retries_never_retries():
    assert _retry_in(Policy(), RuntimeError("x"), None) is None


class CustomError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (RuntimeError("boom"), "RuntimeError: boom"),
        (CustomError("with: colons"), "CustomError: with: colons"),
        (KeyError("key"), "KeyError: 'key'"),
        (ValueError(), "ValueError: "),
    ],
)
def test_the_error_recorded_is_the_exception_s_type_and_message(exc, error):
    assert _error_text(exc) == error


def test_a_run_is_given_up_on_only_past_its_task_s_timeout():
    """The planners close it at the timeout: the runner must not say timed out before them."""
    assert _given_up_after(None) is None
    assert _given_up_after(30.0) > 30.0
    assert _given_up_after(0.5) > 0.5


def test_the_job_counts_its_runs_outcomes_and_keeps_the_failures_to_record_them_in_order():
    first, second = ConnectionError("gone"), OSError("still gone")
    counts, failures = _tally(["succeeded", first, "failed", "succeeded", second, "retrying"])
    assert counts == {"succeeded": 2, "failed": 1, "retrying": 1}
    assert failures == [first, second]


def test_the_callable_s_message_says_which_run_it_is_and_what_sisy_said():
    task = Task(pk=12)
    run = StartedRun(
        run_id=34, status="running", scheduled_for=INSTANT, attempt=2, started_at=INSTANT,
        wait=None, task=task,
    )  # fmt: skip
    message = _message(run, job_id=56, worker="host:1:worker")
    assert message == {
        "task": task,
        # Sisy's Channels message: the task's id and the instant in epoch seconds.
        "channel_message": {"id": 12, "ts": INSTANT.timestamp()},
        "message": {
            "run_id": 34,
            "scheduled_for": INSTANT,
            "job_id": 56,
            "worker": "host:1:worker",
            "attempt": 2,
        },
    }
    assert dt.datetime.fromtimestamp(message["channel_message"]["ts"], UTC) == INSTANT
