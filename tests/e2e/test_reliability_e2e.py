"""The per-task policies, end to end: real `procrastinate worker` processes, real PostgreSQL.

Each test drives a stock worker (its planner and its job runner) with a
task whose policies (``Task.options``: missed, grace, overlap, timeout,
retries, retry_delay) are put to work by slow, failing, broken or
unreachable runs, and checks what the run history records. Timing bounds are
generous (a loaded two-core machine); what is asserted is the order of
events and what each row says, not milliseconds.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sisy_pg import callables
from sisy_pg.models import Task, TaskRun, task_with_callable
from sisy_pg.store import default_store
from tests.helpers import wait_until
from tests.testapp import jobs
from tests.testapp.models import Hit, Widget

pytestmark = pytest.mark.long

EVERY_SECOND = "* * * * * *"
SECOND = dt.timedelta(seconds=1)
RECORD_INFO = json.dumps(callables.describe(jobs.record))


# --- helpers -------------------------------------------------------------------------


def psql(query, params=None):
    """A separate autocommit session, as a user in psql; the rows, if any."""
    with psycopg.connect(**default_store().connection_params(), autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def repeating(func, label, schedule=EVERY_SECOND, options=None, userdata=None, **fields):
    """Save a task of ``func`` on ``schedule`` with ``options``."""
    task = task_with_callable(func, label=label, schedule=schedule, userdata=userdata)
    task.options = options or {}
    for name, value in fields.items():
        setattr(task, name, value)
    task.save()
    return task


def one_off(func, label, options=None, userdata=None):
    """A task that fires once, now (as ``Task.run_once``), with ``options`` from the start."""
    return repeating(
        func, label, options=options, userdata=userdata, iterations=1, wait_for_schedule=False
    )


def runs(task, **filters):
    return TaskRun.objects.filter(task=task, **filters).order_by("scheduled_for")


def reason(run):
    return run.details.get("reason")


def secs(delta):
    return delta.total_seconds()


def _t(when):
    return when.strftime("%H:%M:%S.%f")[:-3] if when else "-"


def history(*tasks):
    """The history of ``tasks``, one line per row, for assertion messages."""
    lines = []
    for run in TaskRun.objects.filter(task__in=tasks).order_by("task_id", "scheduled_for"):
        lag = f"{secs(run.lag):.3f}" if run.lag is not None else "-"
        lines.append(
            f"task {run.task_id} run {run.id} for {_t(run.scheduled_for)} {run.status:9} "
            f"queued {_t(run.queued_at)} started {_t(run.started_at)} "
            f"finished {_t(run.finished_at)} lag {lag} {run.details} {run.error[:120]}"
        )
    return "\n".join(lines)


def stop_firing(task):
    """Disable ``task`` and wait for its runs in progress to end."""
    Task.objects.filter(pk=task.pk).update(enabled=False)
    wait_until(lambda: not runs(task, status="running").exists(), timeout=15, interval=0.1)


def watch(seconds, probe, interval=0.05):
    """Call ``probe`` every ``interval`` for ``seconds``; the values it returned."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(probe())
        time.sleep(interval)
    return seen


def queued_count(task):
    return lambda: runs(task, status="queued").count()


def task_state(task):
    with connection.cursor() as cursor:
        cursor.execute("SELECT state, error FROM sisy_task_status WHERE id = %s", [task.pk])
        return cursor.fetchone()


# --- back pressure: at most one run waiting ------------------------------------------


def test_slow_callable_on_a_fast_schedule_runs_back_to_back_never_behind(start_worker):
    """2-s runs, a fire every second, one worker slot: lag stays ~1 s, it never grows.

    Each fire that finds a run still waiting to start is recorded as coalesced
    into it, so the task never has more than one run queued (before the fix,
    every fire queued one more run and the lag grew by a second per run).
    """
    worker = start_worker("w1", "--concurrency", "1")
    task = repeating(jobs.slow, "slow every second", userdata={"seconds": 2})
    queued = watch(10, queued_count(task))
    stop_firing(task)
    rows = list(runs(task))
    dump = history(task) + "\n" + worker.output()[-3000:]

    assert max(queued) <= 1, dump
    succeeded = [r for r in rows if r.status == "succeeded"]
    assert len(succeeded) >= 4, dump
    lags = [secs(r.lag) for r in succeeded]
    assert min(lags) >= 0, dump
    # About 1 s each (a run waits for the one before); growing by 1 s per run
    # would reach 4 s and more by the fifth.
    assert max(lags) < 3.5, (lags, dump)
    assert lags[-1] < lags[0] + 2, (lags, dump)

    coalesced = [r for r in rows if r.status == "skipped"]
    assert len(coalesced) >= 3, dump
    by_id = {r.id: r for r in rows}
    for row in coalesced:
        assert reason(row) == "coalesced", dump
        waiting = by_id[row.details["into_run"]]  # a run of this task
        assert waiting.scheduled_for < row.scheduled_for, dump
        assert waiting.status in ("succeeded", "cancelled"), dump
        assert waiting.queued_at <= row.queued_at, dump  # it was waiting at that fire
    assert {r.status for r in rows} <= {"succeeded", "skipped", "cancelled"}, dump
    # Every instant from the first to the last has its row: none silently lost.
    instants = [r.scheduled_for for r in rows]
    assert instants == [instants[0] + n * SECOND for n in range(len(instants))], dump


# --- overlap -----------------------------------------------------------------------------


def test_overlap_skip_on_a_busy_worker_skips_naming_the_running_run(start_worker):
    """overlap='skip', 2-s runs every second, four slots: fires during a run are skipped.

    The skipped row names the run that was running when it was decided; the
    runs that do start are on time and never overlap one another.
    """
    worker = start_worker("w1", "--concurrency", "4")
    task = repeating(jobs.slow, "no overlap", options={"overlap": "skip"}, userdata={"seconds": 2})
    time.sleep(6)
    stop_firing(task)
    rows = list(runs(task))
    dump = history(task) + "\n" + worker.output()[-3000:]

    assert {r.status for r in rows} <= {"succeeded", "skipped", "cancelled"}, dump
    succeeded = [r for r in rows if r.status == "succeeded"]
    skipped = [r for r in rows if r.status == "skipped"]
    assert len(succeeded) >= 2 and len(skipped) >= 3, dump
    by_id = {r.id: r for r in rows}
    for row in skipped:
        assert reason(row) == "overlap", dump
        assert "does not allow overlap" in row.error, dump
        other = by_id[row.details["overlapped_run"]]  # a run of this task
        assert other.status == "succeeded", dump
        # It was running when this fire was decided (finished_at of a skipped
        # row is when it was decided; a little slack for the commit order).
        assert other.started_at <= row.finished_at, dump
        assert row.finished_at <= other.finished_at + dt.timedelta(seconds=0.5), dump
    lags = [secs(r.lag) for r in succeeded]
    assert max(lags) < 2, (lags, dump)
    spans = sorted((r.started_at, r.finished_at) for r in succeeded)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, dump


def test_overlap_buffer_one_runs_back_to_back(start_worker):
    """overlap='buffer_one', 2-s runs every second: the next run starts as the previous ends.

    One run waits, buffered behind the running one (no job until then); the
    fires meanwhile are coalesced into it.
    """
    worker = start_worker("w1", "--concurrency", "4")
    task = repeating(
        jobs.slow, "buffer one", options={"overlap": "buffer_one"}, userdata={"seconds": 2}
    )
    queued = watch(7, queued_count(task))
    stop_firing(task)
    rows = list(runs(task))
    dump = history(task) + "\n" + worker.output()[-3000:]

    assert max(queued) <= 1, dump
    succeeded = sorted((r for r in rows if r.status == "succeeded"), key=lambda r: r.started_at)
    assert len(succeeded) >= 3, dump
    for before, after in itertools.pairwise(succeeded):
        assert after.details.get("buffered_behind") == before.id, dump
        gap = secs(after.started_at - before.finished_at)
        assert 0 <= gap < 1.5, (gap, dump)  # back to back, never overlapping
    by_id = {r.id: r for r in rows}
    skipped = [r for r in rows if r.status == "skipped"]
    assert skipped, dump
    for row in skipped:
        assert reason(row) == "coalesced", dump
        assert "buffered_behind" in by_id[row.details["into_run"]].details, dump
    assert {r.status for r in rows} <= {"succeeded", "skipped", "cancelled"}, dump


# --- retries -----------------------------------------------------------------------------


def test_retries_run_again_until_success_or_the_last_attempt(start_worker):
    """retries: a run failing twice succeeds at its third attempt; one always failing stops.

    The callables count their calls themselves (a Hit row per call), so the
    number of attempts is not taken from the engine's own counter.
    """
    worker = start_worker()
    started = time.monotonic()
    flaky = one_off(jobs.flaky, "flaky", options={"retries": 3, "retry_delay": 0.5})
    failing = one_off(jobs.fail_counted, "failing", options={"retries": 1, "retry_delay": 0.3})
    done = ("succeeded", "failed")
    wait_until(
        lambda: runs(flaky, status__in=done).exists() and runs(failing, status__in=done).exists(),
        timeout=40,
        interval=0.1,
    )
    elapsed = time.monotonic() - started
    dump = history(flaky, failing) + "\n" + worker.output()[-3000:]

    run = runs(flaky).get()
    assert run.status == "succeeded", dump
    assert Hit.objects.filter(run_id=run.id).count() == 3, dump
    assert run.details["attempt"] == 3, dump
    attempts = run.details["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2], dump
    assert [a["error"] for a in attempts] == [
        "RuntimeError: flaky call 1 fails",
        "RuntimeError: flaky call 2 fails",
    ], dump
    # Backoff: each retry starts after its delay (0.5 s, then 1 s).
    assert secs(run.started_at - parse_datetime(attempts[1]["failed_at"])) >= 0.9, dump

    run = runs(failing).get()
    assert run.status == "failed", dump
    assert run.error == "RuntimeError: always fails" and "raise RuntimeError" in run.traceback
    assert Hit.objects.filter(run_id=run.id).count() == 2, dump
    assert run.details["attempt"] == 2, dump
    assert [(a["attempt"], a["error"]) for a in run.details["attempts"]] == [
        (1, "RuntimeError: always fails")
    ], dump
    for task in (flaky, failing):
        task.refresh_from_db()
        assert task.finished and not task.error, dump
    # Waits of 0.5 + 1 s and 0.3 s; generous, as a retry may wait for
    # procrastinate's next poll (see test_a_retry_starts_when_due_on_an_idle_worker).
    assert elapsed < 30, (elapsed, dump)


def test_a_retry_runs_even_when_it_reaches_the_worker_after_the_grace(start_worker):
    """A retry is not held to the grace: it continues a run that started in time.

    grace=1 with retry_delay=0.3: procrastinate's retry sends no notification,
    so an idle worker fetches the retried job at its next poll (5 s in
    tests/settings.py), past the grace; the run must still succeed.
    """
    worker = start_worker()
    task = one_off(
        jobs.flaky, "flaky, short grace", options={"retries": 2, "retry_delay": 0.3, "grace": 1}
    )
    run = wait_until(
        lambda: runs(task, status__in=("succeeded", "failed", "missed")).first(),
        timeout=20,
        interval=0.1,
    )
    dump = history(task) + "\n" + worker.output()[-3000:]
    assert run.status == "succeeded" and run.details["attempt"] == 3, dump
    assert Hit.objects.filter(run_id=run.id).count() == 3, dump


# --- timeout ---------------------------------------------------------------------------


def test_timeout_closes_a_one_off_run_before_its_callable_returns(start_worker):
    """timeout=1 on a 3-s callable alone on its worker: timed_out at once, the return noted later.

    Alone: no other task wakes the planner, which must wake for the deadline itself.
    """
    worker = start_worker()
    task = one_off(jobs.slow, "one-off too slow", options={"timeout": 1}, userdata={"seconds": 3})
    run = wait_until(lambda: runs(task, status="running").first(), timeout=10)
    started = time.monotonic()
    try:
        wait_until(lambda: runs(task, status="timed_out").exists(), timeout=2.5, interval=0.05)
    except AssertionError:
        late = time.monotonic() - started
        # What became of it: wait for the callable to return, then show the row.
        wait_until(lambda: not runs(task, status="running").exists(), timeout=10, interval=0.1)
        raise AssertionError(
            f"not timed out {late:.1f} s after it started (timeout 1 s, the callable takes "
            f"3 s); once it returned:\n{history(task)}\n{worker.output()[-3000:]}"
        ) from None
    run.refresh_from_db()
    dump = history(task) + "\n" + worker.output()[-3000:]
    assert reason(run) == "timed_out" and run.error.startswith("timed out"), dump
    assert "returned" not in run.details, dump  # the callable is still sleeping
    assert secs(run.finished_at - run.started_at) < 2.5, dump
    run = wait_until(
        lambda: runs(task, details__returned="succeeded").first(), timeout=10, interval=0.1
    )
    assert run.status == "timed_out", history(task)
    returned_at = parse_datetime(run.details["returned_at"])
    assert secs(returned_at - run.started_at) >= 2.9, history(task)


def test_a_timed_out_run_no_longer_blocks_overlap_skip(start_worker):
    """overlap='skip', timeout=1, 3-s callable every second: once timed out, a run stops counting.

    A later fire starts while the timed-out callable is still executing, and
    no fire is skipped because of a run after that run timed out.
    """
    worker = start_worker("w1", "--concurrency", "4")
    task = repeating(
        jobs.slow,
        "timeout no overlap",
        options={"overlap": "skip", "timeout": 1},
        userdata={"seconds": 3},
    )

    def started_beside_a_timed_out_run():
        for first in runs(task, status="timed_out").exclude(details__returned_at=None):
            returned_at = parse_datetime(first.details["returned_at"])
            later = runs(task, started_at__gt=first.finished_at, started_at__lt=returned_at)
            if later.exists():
                return first, later.first()
        return None

    found = wait_until(started_beside_a_timed_out_run, timeout=12, interval=0.1)
    stop_firing(task)
    first, later = found
    rows = list(runs(task))
    dump = history(task) + "\n" + worker.output()[-3000:]
    assert later.status in ("running", "succeeded", "timed_out"), dump
    by_id = {r.id: r for r in rows}
    timed_out = [r for r in rows if r.status == "timed_out"]
    assert timed_out and all(reason(r) == "timed_out" for r in timed_out), dump
    for row in rows:
        if row.status == "skipped":
            assert reason(row) == "overlap", dump
            other = by_id[row.details["overlapped_run"]]
            if other.status == "timed_out":
                # Decided before that run timed out (slack: the commit order).
                assert row.finished_at <= other.finished_at + dt.timedelta(seconds=0.5), dump
    assert first.status == "timed_out" and later.started_at < first.started_at + 3 * SECOND


# --- broken definitions ------------------------------------------------------------------


def test_broken_tasks_stop_firing_until_mended_while_others_go_on(start_worker):
    """A deleted pk_override row and a missing module: one 'broken' run each, then silence.

    A healthy every-second task keeps running beside them; mending the row
    (raw SQL, a good callable) puts each back in service.
    """
    worker = start_worker()
    widget = Widget.objects.create()
    gone_row = task_with_callable(
        "tests.testapp.models.Widget.touch",
        label="deleted row",
        schedule=EVERY_SECOND,
        pk_override=widget.pk,
    )
    gone_row.enabled = False
    gone_row.save()
    gone_module = task_with_callable(jobs.record, label="missing module", schedule=EVERY_SECOND)
    gone_module.enabled = False
    gone_module.save()
    healthy = repeating(jobs.record, "healthy")
    widget.delete()
    psql(
        """UPDATE sisy_task SET callable_info =
               '{"func_type": "function", "func_path": "tests.testapp.nothing_here.job"}'
            WHERE id = %s""",
        [gone_module.pk],
    )
    psql("UPDATE sisy_task SET enabled = true WHERE id IN (%s, %s)", [gone_row.pk, gone_module.pk])
    broken = (gone_row, gone_module)

    wait_until(
        lambda: (
            all(runs(t, status="failed").exists() for t in broken)
            and runs(healthy, status="succeeded").count() >= 2
        ),
        timeout=15,
        interval=0.1,
    )
    healthy_before = runs(healthy, status="succeeded").count()
    time.sleep(3)
    dump = history(*broken, healthy) + "\n" + worker.output()[-3000:]
    assert runs(healthy, status="succeeded").count() >= healthy_before + 2, dump
    for task in broken:
        failed = runs(task, status="failed").get()
        assert reason(failed) == "broken" and failed.error.startswith("broken: "), dump
        # Nothing else: at most runs already waiting, cancelled by the break.
        others = runs(task).exclude(pk=failed.pk)
        assert all(r.status == "cancelled" and reason(r) == "broken" for r in others), dump
        assert not Hit.objects.filter(task_id=task.pk).exists(), dump
        task.refresh_from_db()
        assert task.error and task.next_run is None and task.enabled, dump
        assert failed.error == f"broken: {task.error}", dump
        assert task_state(task) == ("broken", task.error), dump
    log = worker.output()
    assert log.count(f"Task {gone_row.pk} ({gone_row.label}) is broken") == 1, log
    assert log.count(f"Task {gone_module.pk} ({gone_module.label}) is broken") == 1, log

    mended_at = timezone.now()
    psql(
        "UPDATE sisy_task SET callable_info = %s WHERE id IN (%s, %s)",
        [RECORD_INFO, gone_row.pk, gone_module.pk],
    )
    wait_until(
        lambda: all(runs(t, status="succeeded").count() >= 2 for t in broken),
        timeout=10,
        interval=0.1,
    )
    dump = history(*broken) + "\n" + worker.output()[-3000:]
    for task in broken:
        task.refresh_from_db()
        assert task.error == "" and task.next_run is not None, dump
        assert task_state(task)[0] != "broken", dump
        assert runs(task, status="succeeded", scheduled_for__gt=mended_at).count() >= 2, dump
    assert worker.process.poll() is None


# --- outages and late runs ---------------------------------------------------------------


def test_outage_is_one_missed_range_then_the_schedule_resumes(start_worker):
    """Every worker stopped for 5 s (and a restart), grace 2 s: one 'missed' row covers it.

    Under the default policy (coalesce) the latest instant runs when a worker
    is back, then the schedule goes on; every instant between the first and
    the last row has a row of its own or lies in the missed range.
    """
    first_worker = start_worker("w1")
    task = repeating(jobs.record, "through an outage", options={"grace": 2})
    wait_until(lambda: runs(task, status="succeeded").count() >= 2, timeout=10)
    first_worker.stop()
    stopped_at = timezone.now()
    time.sleep(5)
    second_worker = start_worker("w2")
    back_at = timezone.now()
    wait_until(
        lambda: runs(task, status="succeeded", scheduled_for__gt=back_at).count() >= 2,
        timeout=10,
        interval=0.1,
    )
    stop_firing(task)
    rows = [r for r in runs(task) if r.status != "cancelled"]
    dump = (
        f"stopped at {_t(stopped_at)}, back at {_t(back_at)}\n{history(task)}\n"
        + first_worker.output()[-2000:]
        + second_worker.output()[-3000:]
    )

    missed = [r for r in rows if reason(r) == "missed"]
    assert len(missed) == 1, dump
    gap = missed[0]
    through = parse_datetime(gap.details["through"])
    assert gap.status == "missed" and "within the grace of 2 s" in gap.error, dump
    # The range lies in the outage (and the startup of the second worker)...
    assert stopped_at - 2 * SECOND <= gap.scheduled_for <= stopped_at + 2 * SECOND, dump
    assert through <= back_at + SECOND, dump
    assert secs(through - gap.scheduled_for) >= 3, dump
    # ... and no instant is lost: each has a row or is in the range.
    with_rows = {r.scheduled_for for r in rows}
    instant = rows[0].scheduled_for
    while instant <= rows[-1].scheduled_for:
        assert instant in with_rows or gap.scheduled_for <= instant <= through, (instant, dump)
        instant += SECOND
    # Other rows: runs, fires coalesced into a run still waiting to start, or
    # runs claimed before the stop that reached the second worker too late
    # (reason 'late'); never a second range.
    by_id = {r.id: r for r in rows}
    for row in rows:
        if row is not gap and row.status != "succeeded":
            assert reason(row) in ("late", "coalesced"), dump
            if reason(row) == "coalesced":
                assert by_id[row.details["into_run"]].scheduled_for < row.scheduled_for, dump
    after = [r for r in rows if r.scheduled_for > through]
    catch_up = after[0]
    assert catch_up.scheduled_for == through + SECOND, dump  # the latest instant runs
    assert catch_up.status == "succeeded", dump
    on_schedule = [r for r in after[1:] if r.status == "succeeded"]
    assert len(on_schedule) >= 2 and all(secs(r.lag) < 1.5 for r in on_schedule), dump


def test_a_run_reaching_its_worker_after_its_grace_is_missed_not_run(start_worker):
    """grace=1: a run whose job waits for a busy worker is recorded 'missed' (late), never run.

    A single-slot worker (``--concurrency 1``) is kept busy for 3 s by a
    one-off slow task. The every-second task's run claimed meanwhile is
    queued on time, but its job waits for the slot; when it reaches the
    worker it is more than a second late. Runs resume afterwards.
    """
    worker = start_worker("w1", "--concurrency", "1")
    task = repeating(jobs.record, "short grace", options={"grace": 1})
    wait_until(lambda: runs(task, status="succeeded").exists(), timeout=10)
    busy = one_off(jobs.slow, "hog", userdata={"seconds": 3})
    late = wait_until(lambda: runs(task, status="missed").first(), timeout=15, interval=0.1)
    wait_until(
        lambda: runs(task, status="succeeded", scheduled_for__gt=late.scheduled_for).exists(),
        timeout=10,
        interval=0.1,
    )
    stop_firing(task)
    dump = history(task, busy) + "\n" + worker.output()[-3000:]
    late.refresh_from_db()
    assert reason(late) == "late" and late.details["late_by"] > 1, dump
    assert late.error.startswith("missed: reached a worker") and "grace of 1 s" in late.error
    assert late.started_at is None, dump
    assert not Hit.objects.filter(run_id=late.id).exists(), dump  # never executed
    assert runs(busy, status="succeeded").exists(), dump
    statuses = {r.status for r in runs(task)}
    assert statuses <= {"succeeded", "skipped", "missed", "cancelled"}, dump
    by_id = {r.id: r for r in runs(task)}
    for row in runs(task, status="skipped"):
        assert reason(row) == "coalesced", dump
        assert by_id[row.details["into_run"]].scheduled_for < row.scheduled_for, dump
