"""``manage.py sisy health`` and the SQL it reads: the workers' table, and each blind case of issue 14.

Every situation is made of rows on the real database (procrastinate worker
rows, sisy_worker reports, tasks and runs), as workers and planners would
leave them; the probe must name what is wrong, one reason line each.
"""

import contextlib
import datetime as dt
import io
import itertools
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from sisy_pg import liveness
from sisy_pg.management.commands.sisy import HEALTH_CHECKS
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.integration.helpers import sisy_health, sql, unhealthy
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc
RECENT = dt.timedelta(seconds=1)  # a moment ago: inside every window the probe reads


def health_document():
    out = io.StringIO()
    with contextlib.suppress(CommandError):  # unhealthy: the document is printed first
        call_command("sisy", "health", "--json", stdout=out)
    return json.loads(out.getvalue())


def checks():
    """sisy_health_v1's rows as psql sees them: {check: (ok, subjects)}."""
    return {
        name: (ok, subjects)
        for name, ok, subjects in sql("SELECT check_name, ok, subjects FROM sisy_health_v1()")
    }


def failed_checks():
    return sorted(name for name, (ok, _) in checks().items() if not ok)


_worker_numbers = itertools.count(1)


def report(worker_id, **fields):
    """A worker's report of itself, as its runtime sends it (sisy_worker_seen_v1)."""
    values = {
        "name": f"host:{worker_id}:worker",
        "queues": None,
        "plans": True,
        "concurrency": 4,
        "slots_held": 0,
        "slots_stuck": 0,
        "notifications": "ok",
        "details": {},
        **fields,
    }
    sql(
        "SELECT sisy_worker_seen_v1(%(id)s, %(name)s, %(queues)s, %(plans)s, %(concurrency)s,"
        " %(slots_held)s, %(slots_stuck)s, %(notifications)s, %(details)s)",
        {**values, "id": worker_id, "details": json.dumps(values["details"])},
    )
    return values["name"]


def start_worker(**fields):
    """A live worker: a fresh procrastinate heartbeat and a sisy report; its id and name."""
    ((worker_id,),) = sql("SELECT worker_id FROM procrastinate_register_worker_v1()")
    return worker_id, report(worker_id, **fields)


@pytest.fixture(autouse=True)
def no_other_worker():
    """Rows left by other tests' workers count as dead (rolled back after the test)."""
    sql("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 day'")
    sql("UPDATE sisy_worker SET seen_at = now() - interval '1 day'")


@pytest.fixture
def planner():
    """A live worker that plans the sisy queue: what a healthy cluster has."""
    return start_worker()


def make_task(label, schedule="* * * * * *", **fields):
    task = task_with_callable(jobs.record, label=label, schedule=schedule)
    for name, value in fields.items():
        setattr(task, name, value)
    task.save()
    return task


def record(task, outcomes, finished_ago=RECENT):
    """Rows of the task's latest instants, oldest first, one a second up to a moment ago.

    Each outcome is a status ("succeeded") or a status and a reason
    ("skipped/coalesced"); every row finished ``finished_ago``.
    """
    now = sql("SELECT clock_timestamp()")[0][0].replace(microsecond=0)
    finished = now - finished_ago
    for age, outcome in zip(range(len(outcomes), 0, -1), outcomes, strict=True):
        status, _, reason = outcome.partition("/")
        instant = now - dt.timedelta(seconds=age)
        TaskRun.objects.create(
            task=task,
            scheduled_for=instant,
            status=status,
            started_at=instant if status in ("succeeded", "failed", "timed_out") else None,
            finished_at=finished,
            details={"reason": reason} if reason else {},
        )


# --- the blind case with a real worker -------------------------------------------------------


# --- the workers' table -----------------------------------------------------------------------


def test_a_report_upserts_the_workers_row_and_gone_deletes_it():
    worker_id, name = start_worker(queues=["sisy", "mail"], concurrency=8, slots_held=3)
    ((started, seen),) = sql(
        "SELECT started_at, seen_at FROM sisy_worker WHERE id = %s", [worker_id]
    )
    report(
        worker_id,
        queues=["sisy"],
        concurrency=8,
        slots_held=8,
        notifications="lost",
        details={"slots_full_since": "2026-01-01T00:00:00Z"},
    )
    rows = sql(
        "SELECT name, queues, plans, concurrency, slots_held, slots_stuck, notifications,"
        " details, started_at, seen_at FROM sisy_worker WHERE id = %s",
        [worker_id],
    )
    assert len(rows) == 1
    (row_name, queues, plans, concurrency, held, stuck, notifications, details, s, seen_again) = (
        rows[0]
    )
    assert (row_name, queues, plans, concurrency, held, stuck, notifications) == (
        name,
        ["sisy"],
        True,
        8,
        8,
        0,
        "lost",
    )
    details = json.loads(details) if isinstance(details, str) else details
    assert details == {"slots_full_since": "2026-01-01T00:00:00Z"}
    # The database's clock: the report is newer, the start is the first one.
    assert s == started and seen_again > seen
    sql("SELECT sisy_worker_gone_v1(%s)", [worker_id])
    assert sql("SELECT count(*) FROM sisy_worker WHERE id = %s", [worker_id]) == [(0,)]


def test_a_report_deletes_rows_not_seen_for_a_day():
    killed, _ = start_worker()
    sql("UPDATE sisy_worker SET seen_at = now() - interval '25 hours' WHERE id = %s", [killed])
    quiet, _ = start_worker()
    sql("UPDATE sisy_worker SET seen_at = now() - interval '23 hours' WHERE id = %s", [quiet])
    start_worker()
    remaining = {worker_id for (worker_id,) in sql("SELECT id FROM sisy_worker")}
    assert killed not in remaining and quiet in remaining


def test_a_report_refuses_an_unknown_notifications_state():
    worker_id, _ = start_worker()
    with pytest.raises(IntegrityError), transaction.atomic():
        report(worker_id, notifications="maybe")


# --- healthy ------------------------------------------------------------------------------------


def test_healthy_when_a_worker_plans_and_tasks_run(planner):
    busy = make_task("Every second")
    record(busy, ["succeeded"] * 12 + ["skipped/coalesced", "succeeded"])
    make_task("Nightly", "30 2 * * *")
    out = sisy_health()
    assert out.startswith("ok: 1 live worker(s), no task overdue or broken"), out
    assert failed_checks() == []
    document = health_document()
    assert document["ok"] is True and document["problems"] == []
    assert document["planners"] == 1 and document["workers"][0]["name"] == planner[1]


def test_every_check_has_a_row_in_a_fixed_order():
    names = [name for (name,) in sql("SELECT check_name FROM sisy_health_v1()")]
    assert names == list(HEALTH_CHECKS)
    assert set(HEALTH_CHECKS) >= {"workers", "unplanned", "starving", "overrun", "slots_full"}


# --- workers ------------------------------------------------------------------------------------


def test_unhealthy_without_a_live_worker():
    message = unhealthy()
    assert message.startswith("unhealthy: no live worker"), message


def test_unhealthy_when_the_live_workers_serve_other_queues_only():
    """The blind case: a worker with --queues other counted as live while nothing was planned."""
    start_worker(queues=["other"], plans=False)
    start_worker(queues=["mail", "reports"], plans=False)
    message = unhealthy()
    assert (
        "2 live worker(s), none plans the sisy queue (their queues: other; mail, reports)"
        in message
    ), message
    assert failed_checks() == ["workers"]


def test_a_worker_that_does_not_report_is_not_counted_as_planning():
    sql("SELECT procrastinate_register_worker_v1()")
    message = unhealthy()
    assert "1 live worker(s), none plans the sisy queue (their queues: unknown" in message


def test_a_worker_is_live_by_its_heartbeat_or_its_report():
    by_report, _ = start_worker()
    sql(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 day' WHERE id = %s",
        [by_report],
    )
    assert sisy_health().startswith("ok: 1 live worker(s)")
    sql("UPDATE sisy_worker SET seen_at = now() - interval '1 hour' WHERE id = %s", [by_report])
    assert unhealthy().startswith("unhealthy: no live worker")
    sql("UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %s", [by_report])
    assert sisy_health().startswith("ok: 1 live worker(s)")


# --- tasks --------------------------------------------------------------------------------------


def test_unhealthy_when_enabled_tasks_were_never_planned(planner):
    """The blind case: enabled tasks whose next_run stays NULL showed as scheduled."""
    forgotten = make_task("Forgotten")
    sql(
        "UPDATE sisy_task SET next_run = NULL, created_at = now() - interval '1 hour',"
        " modified_at = now() - interval '1 hour' WHERE id = %s",
        [forgotten.pk],
    )
    # Saved a moment ago: a planner has not had its milliseconds yet.
    fresh = make_task("Just saved")
    sql("UPDATE sisy_task SET next_run = NULL WHERE id = %s", [fresh.pk])
    # Not waiting for a plan: paused, finished, broken.
    for label, change in [
        ("Paused", "enabled = false"),
        ("Finished", "finished_at = now()"),
        ("Broken", "error = 'gone'"),
    ]:
        task = make_task(label)
        sql(
            f"UPDATE sisy_task SET {change}, next_run = NULL, created_at = now() - interval '1 hour',"
            " modified_at = now() - interval '1 hour' WHERE id = %s",
            [task.pk],
        )
    message = unhealthy("--ignore-broken")
    assert "1 enabled task(s) never planned" in message and "'Forgotten'" in message, message
    assert "Just saved" not in message and "Paused" not in message
    assert checks()["unplanned"] == (False, ["Forgotten"])


def test_unhealthy_when_a_task_starves(planner):
    """The blind case: a task whose fires are coalesced, its next_run moving on, looked healthy."""
    starving = make_task("Starving")
    record(starving, ["succeeded"] * 3 + ["skipped/coalesced"] * 7)
    # Its last executed run is three of its instants old: starving too.
    stalled = make_task("Stalled")
    record(stalled, ["succeeded"] * 7 + ["skipped/fair_share", "missed/late", "skipped/backlog"])
    # Not starving: a coalesced instant now and then; an instant skipped by
    # its overlap policy (its own choice); starvation long past.
    fine = make_task("Fine")
    record(fine, ["succeeded", "skipped/coalesced"] * 3 + ["succeeded"] * 4)
    overlapping = make_task("Overlapping")
    record(overlapping, ["skipped/overlap"] * 10)
    recovered = make_task("Recovered long ago")
    record(recovered, ["skipped/coalesced"] * 10, finished_ago=dt.timedelta(hours=1))
    message = unhealthy()
    assert "2 task(s) starving" in message and "'Stalled', 'Starving'" in message, message
    assert checks()["starving"] == (False, ["Stalled", "Starving"])
    # Paused, it starves no more.
    Task.objects.filter(label__in=["Stalled", "Starving"]).update(enabled=False)
    assert checks()["starving"] == (True, [])


def test_a_task_with_fewer_than_three_instants_is_not_judged_starving(planner):
    new = make_task("New")
    record(new, ["skipped/coalesced"] * 2)
    assert checks()["starving"] == (True, [])


def test_overdue_and_broken_are_still_checked(planner):
    late = make_task("Late")
    sql("UPDATE sisy_task SET next_run = now() - interval '5 minutes' WHERE id = %s", [late.pk])
    broken = make_task("Broken")
    sql("UPDATE sisy_task SET error = 'gone', next_run = NULL WHERE id = %s", [broken.pk])
    message = unhealthy()
    assert "1 task(s) overdue by more than 60 s: 'Late'" in message
    assert "1 task(s) broken: 'Broken'" in message
    message = unhealthy("--ignore-broken")
    assert "broken" not in message


def test_a_loose_max_overdue_is_not_overruled_by_the_load_check(planner):
    """Lateness is judged once, by --max-overdue: not again as overload."""
    late = make_task("Late")
    sql("UPDATE sisy_task SET next_run = now() - interval '5 minutes' WHERE id = %s", [late.pk])
    assert "overloaded" not in unhealthy()
    assert sisy_health("--max-overdue", "600").startswith("ok: ")


# --- runs ---------------------------------------------------------------------------------------


def running_run(task, deadline_in, **fields):
    now = sql("SELECT clock_timestamp()")[0][0]
    return TaskRun.objects.create(
        task=task,
        scheduled_for=now - dt.timedelta(minutes=10),
        status="running",
        started_at=now - dt.timedelta(minutes=10),
        details={"deadline": (now + deadline_in).isoformat(), "attempt": 1},
        **fields,
    )


def test_unhealthy_when_runs_are_still_running_past_their_timeout(planner):
    """The blind case: runs past their timeout that no planner timed out."""
    hung = make_task("Hung")
    running_run(hung, -dt.timedelta(minutes=5))
    slow = make_task("Slow but within its timeout")
    running_run(slow, dt.timedelta(minutes=5))
    message = unhealthy()
    assert "1 run(s) still running" in message and "past their timeout" in message
    assert "'Hung'" in message and "Slow" not in message, message


def test_unhealthy_when_runs_timed_out_but_their_callable_never_returned(planner):
    """Their threads hold slots of a live worker: name the tasks."""
    _, worker_name = planner
    dead_id, dead_name = start_worker()
    sql(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 day' WHERE id = %s",
        [dead_id],
    )
    sql("UPDATE sisy_worker SET seen_at = now() - interval '1 day' WHERE id = %s", [dead_id])
    for label, worker, details in [
        ("Never returns", worker_name, {"reason": "timed_out"}),
        ("Returned late", worker_name, {"reason": "timed_out", "returned": "succeeded"}),
        ("On a dead worker", dead_name, {"reason": "timed_out"}),
    ]:
        TaskRun.objects.create(
            task=make_task(label),
            scheduled_for=dt.datetime.now(UTC) - dt.timedelta(minutes=5),
            status="timed_out",
            started_at=dt.datetime.now(UTC) - dt.timedelta(minutes=5),
            finished_at=dt.datetime.now(UTC) - dt.timedelta(minutes=4),
            worker=worker,
            details=details,
        )
    message = unhealthy()
    assert "1 run(s) timed out whose callable never returned" in message, message
    assert "'Never returns'" in message
    assert "Returned late" not in message and "dead" not in message
    assert failed_checks() == ["stuck"]


# --- slots and notifications ---------------------------------------------------------------------


def test_unhealthy_when_a_workers_slots_are_all_held(planner):
    """The blind case: one never-returning callable held all 8 slots and health said ok."""
    _, full = start_worker(concurrency=8, slots_held=8)
    # Full for an instant, as a busy instant makes it: not yet a problem (a
    # worker says since when, or for how long when it reported).
    start_worker(
        concurrency=2, slots_held=2, details={"slots_full_since": dt.datetime.now(UTC).isoformat()}
    )
    start_worker(concurrency=2, slots_held=2, details={"slots_full_for": 0.5})
    _, full_for_long = start_worker(concurrency=2, slots_held=2, details={"slots_full_for": 3600})
    message = unhealthy()
    assert (
        f"2 worker(s) with every callable slot held: '{full} (8 of 8)', '{full_for_long} (2 of 2)'"
        in message
    ), message
    assert failed_checks() == ["slots_full"]


def test_unhealthy_when_slots_are_held_by_stuck_callables(planner):
    _, stuck = start_worker(
        concurrency=8, slots_held=3, slots_stuck=2, details={"stuck_tasks": [7]}
    )
    message = unhealthy()
    assert "1 worker(s) with callable slots held by runs past their timeout" in message
    assert f"'{stuck} (2 of 8)'" in message, message
    assert failed_checks() == ["slots_stuck"]


def test_unhealthy_when_notifications_are_lost(planner):
    """Behind PgBouncer in transaction mode: the worker polls, and health says how to fix it."""
    _, polling = start_worker(notifications="lost")
    start_worker(notifications="unknown")  # still probing: no verdict yet
    message = unhealthy()
    assert "1 worker(s) receive no notifications (degraded: they poll" in message
    assert f"'{polling}'" in message
    assert "SISY_LISTEN_DATABASE" in message and "docs/operations.md#connection-poolers" in message
    assert failed_checks() == ["notifications"]
    # A liveness probe may leave it out: restarting the worker cannot mend a pooler's setup.
    out = sisy_health("--ignore", "notifications")
    assert out.startswith("ok: 3 live worker(s), no task overdue, notifications (ignored)"), out


# --- load ---------------------------------------------------------------------------------------


def test_unhealthy_when_overloaded(planner):
    """Many instants not run for want of capacity across tasks: overload, with its figures."""
    for number in range(6):
        record(
            make_task(f"Flood {number}"),
            ["succeeded", "skipped/coalesced", "succeeded", "skipped/coalesced", "succeeded"],
        )
    message = unhealthy()
    assert "overloaded: " in message and "instants due a second" in message, message
    assert failed_checks() == ["load"]
    load = health_document()["load"]
    assert load["not_run"] == 12 and load["due"] == 30


@pytest.mark.parametrize("due", [0, liveness.NOT_RUN_MIN_DUE - 1, liveness.NOT_RUN_MIN_DUE, 100])
@pytest.mark.parametrize("not_run_share", [0.0, liveness.NOT_RUN_SHARE, 0.5])
@pytest.mark.parametrize(
    ("overdue_tasks", "max_lag"),
    [(0, 0.0), (1, liveness.OVERDUE_LIMIT), (1, liveness.OVERDUE_LIMIT + 0.1), (0, 60.0)],
)
def test_the_sql_overload_rule_is_the_planners(due, not_run_share, overdue_tasks, max_lag):
    not_run = int(due * not_run_share) + (1 if not_run_share else 0)
    load = liveness.Load(
        window_seconds=10.0,
        due=due,
        executed=due - not_run,
        not_run=not_run,
        overdue_tasks=overdue_tasks,
        max_lag_seconds=max_lag,
    )
    ((overloaded,),) = sql(
        "SELECT sisy_overloaded_v1(%s, %s, %s, %s)", [due, not_run, overdue_tasks, max_lag]
    )
    assert overloaded is load.overloaded


# --- the JSON form ------------------------------------------------------------------------------


def test_the_json_form_has_every_problem_and_the_facts_behind_them(planner):
    start_worker(notifications="lost")
    forgotten = make_task("Forgotten")
    sql(
        "UPDATE sisy_task SET next_run = NULL, created_at = now() - interval '1 hour',"
        " modified_at = now() - interval '1 hour' WHERE id = %s",
        [forgotten.pk],
    )
    document = health_document()
    assert document["ok"] is False and len(document["problems"]) == 2
    assert document["unplanned"] == ["Forgotten"]
    assert document["live_workers"] == 2 and document["planners"] == 2
    assert {w["notifications"] for w in document["workers"]} == {"ok", "lost"}
    assert document["checks"]["notifications"]["ok"] is False
    assert set(document["checks"]) == set(checks())
    assert {"stalled_worker_timeout", "max_overdue", "overdue", "broken", "load"} <= set(document)
