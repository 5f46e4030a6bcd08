"""The planner against a real database, in-process (the worker tests run it for real)."""

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sisy_pg import procrastinate_seam, worker
from sisy_pg.models import Task, TaskRun
from tests.integration.helpers import make_task, run_planner, sql

pytestmark = pytest.mark.django_db(transaction=True)


def test_plans_tasks_written_without_next_run():
    task = make_task()
    Task.objects.filter(pk=task.pk).update(schedule="0 12 * * *", timezone="Asia/Tokyo")
    assert run_planner("plan_pending") == 1
    task.refresh_from_db()
    assert task.next_run.astimezone(dt.timezone(dt.timedelta(hours=9))).hour == 12
    assert run_planner("plan_pending") == 0


def test_fires_due_tasks_and_plans_the_following_instant():
    # A yearly schedule: no later instant can fall due before the claim
    # (that would be a catch-up, another test's business).
    task = make_task("0 0 1 1 *")
    sql("UPDATE sisy_task SET next_run = now() WHERE id = %s", [task.pk])
    fired_for = Task.objects.get(pk=task.pk).next_run
    assert run_planner("fire_due") == 1
    task.refresh_from_db()
    run = TaskRun.objects.get(task=task)
    assert run.scheduled_for == fired_for and run.status == "queued"
    zone = zoneinfo.ZoneInfo(task.timezone)
    following = dt.datetime(fired_for.astimezone(zone).year + 1, 1, 1, tzinfo=zone)
    assert task.next_run == following
    assert (task.fire_count, task.last_run) == (1, fired_for)


def test_iterations_used_up_finish_the_task_but_keep_row_and_history():
    task = make_task("* * * * * *", iterations=1)
    sql("UPDATE sisy_task SET next_run = now() WHERE id = %s", [task.pk])
    run_planner("fire_due")
    task.refresh_from_db()
    assert not task.enabled and task.finished and task.next_run is None
    assert TaskRun.objects.get(task=task).status == "queued"  # the last run still happens


def test_end_running_passed_finishes_the_task():
    task = make_task("* * * * * *", end_running=timezone.now() + dt.timedelta(hours=1))
    # Its last instant is due now (a writer that sets next_run is obeyed): the second just
    # begun, so that the next instant, a second later, is past end_running.
    sql(
        "UPDATE sisy_task SET end_running = date_trunc('second', now()) + interval '10 ms',"
        " next_run = date_trunc('second', now()) WHERE id = %s",
        [task.pk],
    )
    run_planner("fire_due")
    task.refresh_from_db()
    assert task.finished and not task.enabled and Task.objects.filter(pk=task.pk).exists()


def test_a_bad_row_does_not_stop_the_others():
    good = make_task()
    bad = make_task()
    # '99 * * * *' has the right shape for the database, but croniter refuses it.
    sql("UPDATE sisy_task SET schedule = '99 * * * *' WHERE id = %s", [bad.pk])
    Task.objects.filter(pk=good.pk).update(schedule="*/2 * * * *")
    assert run_planner("plan_pending") == 2
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.next_run is not None
    assert bad.next_run is None and "is not valid cron" in bad.error
    assert run_planner("plan_pending") == 0  # not retried until the schedule changes
    Task.objects.filter(pk=bad.pk).update(schedule="* * * * *")
    bad.refresh_from_db()
    assert bad.error == ""
    assert run_planner("plan_pending") == 1


def test_tick_sleeps_until_the_earliest_next_run():
    make_task("0 0 1 1 *")
    soon = make_task("0 0 1 1 *")
    sql("UPDATE sisy_task SET next_run = now() + interval '2 seconds' WHERE id = %s", [soon.pk])
    delay = run_planner("tick")
    assert 0 < delay <= 2


def test_an_hour_missed_is_one_row_and_one_run_then_the_schedule():
    task = make_task("* * * * * *")
    sql("UPDATE sisy_task SET next_run = now() - interval '1 hour' WHERE id = %s", [task.pk])
    run_planner("fire_due")
    task.refresh_from_db()
    missed, fired = TaskRun.objects.filter(task=task).order_by("scheduled_for")
    assert (missed.status, missed.details["reason"], fired.status) == ("missed", "missed", "queued")
    assert parse_datetime(missed.details["through"]) == fired.scheduled_for - dt.timedelta(
        seconds=1
    )
    assert task.fire_count == 1 and task.next_run == fired.scheduled_for + dt.timedelta(seconds=1)
    assert task.next_run > timezone.now() - dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("queues", "serves"),
    [(None, True), ([], True), (["default", "sisy"], True), (["default"], False)],
)
def test_worker_serves_the_sisy_queue_when_started_on_it_or_on_all(queues, serves):
    from procrastinate.contrib.django import app

    options = procrastinate_seam.worker_options(app, queues=queues)
    assert options.serves("sisy") is serves
    assert (worker.SisyWorker(options).planner is not None) is serves


def test_housekeeping_prunes_history_past_retention():
    task = make_task()
    old = TaskRun.objects.create(
        task=task,
        scheduled_for=timezone.now() - dt.timedelta(days=30),
        status="succeeded",
        finished_at=timezone.now() - dt.timedelta(days=30),
    )
    kept = TaskRun.objects.create(
        task=task, scheduled_for=timezone.now(), status="succeeded", finished_at=timezone.now()
    )
    run_planner("housekeeping", True)
    assert list(TaskRun.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not TaskRun.objects.filter(pk=old.pk).exists()
