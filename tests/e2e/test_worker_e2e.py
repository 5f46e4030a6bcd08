"""End to end: real `manage.py procrastinate worker` processes, real PostgreSQL.

Writers change tasks the way users do (psql, queryset.update, save) and the
running workers obey without a restart.
"""

import collections
import datetime as dt
import itertools
import time

import psycopg
import pytest
from django.utils import timezone

from sisy_pg.models import Task, TaskRun, task_with_callable
from sisy_pg.store import default_store
from tests.helpers import wait_until
from tests.testapp import jobs
from tests.testapp.models import Hit, SlugWidget, UUIDWidget, Widget

FAR_AWAY = "0 0 1 1 *"  # once a year


def psql(query, params=None):
    """A separate session, as a user in psql would have; autocommit."""
    with psycopg.connect(**default_store().connection_params(), autocommit=True) as conn:
        conn.execute(query, params)
        return timezone.now()


def runs(task, **filters):
    return TaskRun.objects.filter(task=task, **filters)


def test_every_kind_of_callable_runs_with_its_message(start_worker):
    start_worker()
    rows = [
        Widget.objects.create(),
        UUIDWidget.objects.create(),
        SlugWidget.objects.create(slug="s-1"),
    ]
    tasks = [
        Task.run_once(f"tests.testapp.models.{type(r).__name__}.touch", pk_override=r.pk)
        for r in rows
    ]
    tasks += [
        Task.run_once(jobs.Things.class_job),
        Task.run_once(jobs.Things.static_job),
        Task.run_once("tests.testapp.jobs.record"),
    ]
    wait_until(
        lambda: TaskRun.objects.filter(task__in=tasks, status="succeeded").count() == 6, timeout=10
    )
    for row in rows:
        row.refresh_from_db()
        assert row.touched == 1
    assert {h.row_pk for h in Hit.objects.exclude(row_pk="")} == {str(r.pk) for r in rows}
    for task in tasks:
        run = runs(task).get()
        hit = Hit.objects.get(task_id=task.pk)
        assert run.status == "succeeded" and hit.run_id == run.pk
        assert hit.scheduled_for == run.scheduled_for
        task.refresh_from_db()
        assert task.finished and not task.enabled  # kept, marked finished


@pytest.mark.parametrize("writer", ["psql", "queryset"])
def test_disable_stops_a_running_schedule_at_once(start_worker, writer):
    start_worker()
    task = task_with_callable(jobs.record, schedule="* * * * * *")
    task.save()
    wait_until(lambda: runs(task, status="succeeded").count() >= 2, timeout=10)
    if writer == "psql":
        changed_at = psql("UPDATE sisy_task SET enabled = false WHERE id = %s", [task.pk])
    else:
        Task.objects.filter(pk=task.pk).update(enabled=False)
        changed_at = timezone.now()
    # A run already started may end; its queued runs were cancelled with the change.
    wait_until(lambda: not runs(task, status__in=["queued", "running"]).exists(), timeout=10)
    succeeded = runs(task, status="succeeded").count()
    time.sleep(2.5)  # two more instants of the schedule: nothing starts
    assert runs(task, status="succeeded").count() == succeeded
    assert not runs(task, status__in=["queued", "running"]).exists()
    # Every instant after the change is cancelled or not fired at all.
    after = runs(task, scheduled_for__gt=changed_at).exclude(status="cancelled")
    assert not after.exists(), list(after.values("scheduled_for", "started_at", "status"))


@pytest.mark.parametrize("writer", ["psql", "queryset", "save"])
def test_new_schedule_fires_at_its_first_instant(start_worker, writer):
    start_worker()
    task = task_with_callable(jobs.record, schedule=FAR_AWAY)
    task.save()
    time.sleep(0.5)
    if writer == "psql":
        changed_at = psql("UPDATE sisy_task SET schedule = '* * * * * *' WHERE id = %s", [task.pk])
    elif writer == "queryset":
        Task.objects.filter(pk=task.pk).update(schedule="* * * * * *")
        changed_at = timezone.now()
    else:
        task.schedule = "* * * * * *"
        task.save()
        changed_at = timezone.now()
    first = wait_until(
        lambda: runs(task, status="succeeded").order_by("started_at").first(), timeout=10
    )
    # In force within milliseconds (python -m bench measures it); a loaded machine
    # may take longer, but not five seconds.
    assert first.started_at - changed_at < dt.timedelta(seconds=5)


def test_planner_reconnects_after_losing_its_connections(start_worker):
    worker = start_worker()
    psql("""SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'sisy-planner' AND datname = current_database()""")
    wait_until(lambda: "sisy planner failed" in worker.output(), timeout=10)
    task = task_with_callable(jobs.record, schedule="* * * * * *")
    task.save()
    wait_until(lambda: runs(task, status="succeeded").exists(), timeout=10)
    assert worker.process.poll() is None
    worker.expect_planner_errors = True


def test_task_inserted_with_raw_sql_is_planned_and_run(start_worker):
    start_worker()
    psql("""INSERT INTO sisy_task (label, callable_info, schedule, timezone)
            VALUES ('raw', '{"func_type": "function", "func_path": "tests.testapp.jobs.record"}',
                    '* * * * * *', 'UTC')""")
    wait_until(
        lambda: TaskRun.objects.filter(task__label="raw", status="succeeded").exists(), timeout=5
    )


def test_failure_is_recorded_and_the_worker_carries_on(start_worker):
    worker = start_worker()
    failing = task_with_callable(jobs.fail, schedule="* * * * * *")
    failing.save()
    healthy = task_with_callable(jobs.record, schedule="* * * * * *")
    healthy.save()
    wait_until(
        lambda: (
            runs(failing, status="failed").count() >= 2
            and runs(healthy, status="succeeded").count() >= 2
        ),
        timeout=10,
    )
    failed = runs(failing, status="failed").first()
    assert failed.error == "RuntimeError: boom from the test callable"
    assert "jobs.py" in failed.traceback and "raise RuntimeError" in failed.traceback
    failing.refresh_from_db()
    assert failing.enabled and failing.next_run is not None  # keeps its schedule
    assert worker.process.poll() is None
    # Each failure is one line with its traceback, logged once (procrastinate's
    # logger, at WARNING in these settings, would add its own for a failed job).
    Task.objects.filter(pk=failing.pk).update(enabled=False)
    wait_until(lambda: not runs(failing, status__in=["queued", "running"]).exists(), timeout=10)
    log = worker.output()
    failures = runs(failing, status="failed").count()
    assert log.count("Traceback (most recent call last)") == failures, log
    assert log.count(f"of task {failing.pk} ({failing.label}) for ") == failures, log
    assert log.count("raise RuntimeError") == failures, log


def test_no_overlap_records_skipped_fires(start_worker):
    start_worker("w1", "--concurrency", "4")
    task = task_with_callable(jobs.slow, schedule="* * * * * *", userdata={"seconds": 2.5})
    task.allow_overlap = False
    task.save()
    wait_until(lambda: runs(task, status="skipped").count() >= 2, timeout=10)
    skipped = runs(task, status="skipped").first()
    assert "does not allow overlap" in skipped.error
    # Never two runs of it at once.
    spans = [
        (r.started_at, r.finished_at or timezone.now())
        for r in runs(task).exclude(started_at=None).exclude(status="skipped")
    ]
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end


def test_overlap_allowed_runs_concurrently(start_worker):
    start_worker("w1", "--concurrency", "4")
    task = task_with_callable(jobs.slow, schedule="* * * * * *", userdata={"seconds": 2.5})
    task.save()
    wait_until(lambda: runs(task, status="running").count() >= 2, timeout=10)


@pytest.mark.long  # the soak covers it too; left out of the CI matrix
def test_two_workers_twenty_tasks_thirty_seconds_exactly_once(start_worker):
    start_worker("w1")
    start_worker("w2")
    tasks = []
    for i in range(20):
        task = task_with_callable(jobs.record, label=f"every-second-{i}", schedule="* * * * * *")
        task.save()
        tasks.append(task)

    def fired(task):
        return runs(task).exclude(status="cancelled").order_by("scheduled_for")

    # Thirty instants of each (not a fixed sleep: a loaded machine is slower).
    def ended(task):
        return fired(task).exclude(status__in=["queued", "running"]).count()

    wait_until(lambda: all(ended(t) >= 30 for t in tasks), timeout=120)
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(enabled=False)
    wait_until(
        lambda: not TaskRun.objects.filter(task__in=tasks, status__in=["queued", "running"]),
        timeout=30,
    )

    hits = collections.Counter(
        Hit.objects.filter(task_id__in=[t.pk for t in tasks]).values_list(
            "task_id", "scheduled_for"
        )
    )
    duplicates = {key: n for key, n in hits.items() if n > 1}
    assert not duplicates
    workers = set()
    for task in tasks:
        instants = [r.scheduled_for for r in fired(task)]
        assert len(instants) >= 30, (task.label, len(instants))
        # Every second from the first instant to the last is there, once: run,
        # or recorded with the reason it was not (coalesced on a busy machine).
        expected = [instants[0] + dt.timedelta(seconds=n) for n in range(len(instants))]
        assert instants == expected, task.label
        for run in fired(task):
            # Nothing lost or failed: a fire not run was coalesced into a run
            # waiting on a busy machine (or reached a worker too late).
            assert run.status == "succeeded" or run.details.get("reason") in (
                "coalesced",
                "late",
            ), (task.label, run, run.details)
        succeeded = [r.scheduled_for for r in fired(task).filter(status="succeeded")]
        assert len(succeeded) >= len(instants) // 2, (task.label, len(succeeded))
        assert sum(hits[(task.pk, when)] for when in instants) == len(succeeded)
        assert all(hits[(task.pk, when)] == 1 for when in succeeded)
        workers.update(fired(task).values_list("worker", flat=True))
    assert any(":w1" in w for w in workers) and any(":w2" in w for w in workers)


def test_a_callable_outside_the_allowlist_is_refused_at_run_time(
    start_worker, monkeypatch, tmp_path
):
    """Raw SQL can name any path: the worker refuses it, imports nothing, records why."""
    marker = tmp_path / "imported"
    monkeypatch.setenv("SISY_FORBIDDEN_IMPORT_MARKER", str(marker))  # the worker inherits it
    worker = start_worker()
    healthy = task_with_callable(jobs.record, label="healthy", schedule="* * * * * *")
    healthy.save()
    psql("""INSERT INTO sisy_task (label, callable_info, schedule, timezone) VALUES
            ('forbidden', '{"func_type": "function", "func_path": "tests.forbidden_jobs.job"}',
             '* * * * * *', 'UTC'),
            ('os', '{"func_type": "function", "func_path": "os.system"}', '* * * * * *', 'UTC')""")
    refused = TaskRun.objects.filter(task__label__in=["forbidden", "os"], status="failed")
    wait_until(
        lambda: (
            {run.task.label for run in refused.select_related("task")} == {"forbidden", "os"}
            and runs(healthy, status="succeeded").count() >= 2
        ),
        timeout=15,
    )
    for run in refused:
        # The task is broken with the reason: it stops firing until fixed.
        assert run.error.startswith("broken: refused: ") and "SISY_ALLOWED_CALLABLES" in run.error
        assert run.details["reason"] == "broken"
        assert run.task.error.startswith("refused: ") and run.task.next_run is None
    assert refused.count() == 2  # one run each, not one per instant
    assert not TaskRun.objects.filter(task__label__in=["forbidden", "os"], status="succeeded")
    assert not marker.exists()  # the worker never imported the module
    assert worker.process.poll() is None


def test_a_stored_path_that_walks_out_of_an_allowed_module_is_never_called(start_worker):
    """Paths under an allowed prefix that reach the standard library through a module's
    attributes (written by raw SQL and by ``queryset.update()``, which skip ``save()``), and a
    row whose func_type disagrees with its code: each task is broken with the reason, its
    callable never called, and the worker carries on.

    Never called: ``dict.update`` on the worker's builtins would show in the probe's later
    calls, ``os.system`` given the message would fail with a TypeError (not be ``broken``),
    and ``Things.class_job`` records each call it gets.
    """
    worker = start_worker()
    probe = task_with_callable(jobs.builtins_probe, label="probe", schedule="* * * * * *")
    probe.save()
    psql("""INSERT INTO sisy_task (label, callable_info, schedule, timezone) VALUES
            ('system', '{"func_type": "function",
                         "func_path": "tests.testapp.models.uuid.os.system"}',
             '* * * * * *', 'UTC'),
            ('mismatch', '{"func_type": "function",
                           "func_path": "tests.testapp.jobs.Things.class_job"}',
             '* * * * * *', 'UTC')""")
    builtins_update = task_with_callable(jobs.record, label="builtins", schedule=FAR_AWAY)
    builtins_update.save()
    Task.objects.filter(pk=builtins_update.pk).update(
        callable_info={
            "func_type": "function",
            "func_path": "tests.testapp.jobs.__builtins__.update",
        },
        schedule="* * * * * *",
    )
    bad = TaskRun.objects.filter(task__label__in=["system", "builtins", "mismatch"])
    wait_until(lambda: bad.filter(status__in=TaskRun.FINAL_STATUSES).count() == 3, timeout=15)
    last_bad_run = bad.latest("finished_at").finished_at
    wait_until(
        lambda: Hit.objects.filter(task_id=probe.pk, scheduled_for__gt=last_bad_run).count() >= 2,
        timeout=10,
    )
    dump = "\n".join(f"{r.task.label}: {r.status} {r.error!r} {r.details}" for r in bad)
    reasons = {
        "system": "'tests.testapp.models.uuid.os.system' is nested too deep",
        "builtins": "tests.testapp.jobs.__builtins__ is not a class (it is dict)",
        "mismatch": "is stored with func_type 'function', but its func_type is 'classmethod'",
    }
    for run in bad.select_related("task"):
        assert run.status == "failed" and run.details["reason"] == "broken", dump
        assert reasons[run.task.label] in run.task.error, dump
        assert run.error == f"broken: {run.task.error}" and run.task.next_run is None, dump
    assert bad.count() == 3, dump  # one run each: broken tasks stop firing
    assert not Hit.objects.filter(name__in=["builtins_changed", "class_job"]).exists()
    assert Hit.objects.filter(name="builtins_intact", task_id=probe.pk).count() >= 2
    assert "TypeError" not in worker.output()
    assert worker.process.poll() is None
