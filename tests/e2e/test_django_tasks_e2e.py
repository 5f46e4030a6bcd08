"""End to end: schedules of Django tasks (``@task``), run by real workers on real PostgreSQL.

Two stock ``manage.py procrastinate worker`` processes plan the schedules and
enqueue each instant on sisy_pg.django_tasks.ProcrastinateBackend, whose jobs
the same workers run; each run follows its task's result to the end.
"""

import datetime as dt
import json

import pytest
from django.db import connection
from django.test import override_settings

from sisy_pg import tasks_framework
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.e2e.helpers import Worker, instants_in
from tests.helpers import wait_until
from tests.testapp import scheduled_tasks
from tests.testapp.models import Hit

EVERY_SECOND = "* * * * * *"


def settle(tasks, at_least):
    """Wait for ``at_least`` ended runs of each task, then stop them and wait for the rest."""
    wait_until(
        lambda: all(
            TaskRun.objects.filter(task=t, status__in=("succeeded", "failed")).count() >= at_least
            for t in tasks
        ),
        timeout=30,
    )
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(enabled=False)
    wait_until(
        lambda: (
            not TaskRun.objects.filter(task__in=tasks, status__in=("queued", "running")).exists()
        ),
        timeout=30,
    )


def test_a_task_scheduled_every_second_runs_once_per_instant_on_two_workers(start_worker):
    start_worker("w1")
    start_worker("w2")
    tasks = [
        task_with_callable(
            scheduled_tasks.record_instant,
            label="by object",
            schedule=EVERY_SECOND,
            userdata={"name": "by object"},
        ),
        task_with_callable(
            "tests.testapp.scheduled_tasks.record_instant",
            label="by path",
            schedule=EVERY_SECOND,
            userdata={"name": "by path"},
        ),
    ]
    for task in tasks:
        task.save()
    settle(tasks, at_least=4)

    result_ids = []
    for task in tasks:
        runs = list(TaskRun.objects.filter(task=task).order_by("scheduled_for"))
        assert {run.status for run in runs} == {"succeeded"}, [(r.status, r.error) for r in runs]
        instants = [run.scheduled_for for run in runs]
        # Every second from the first to the last, each once.
        assert instants == instants_in(instants[0], instants[-1] + dt.timedelta(seconds=1))
        hits = Hit.objects.filter(name=task.label).order_by("scheduled_for")
        assert [(h.scheduled_for, h.run_id) for h in hits] == [
            (r.scheduled_for, r.pk) for r in runs
        ]
        for run in runs:
            result_id = run.details["task_result_id"]
            result_ids.append(result_id)
            assert run.details["task_backend"] == "default"
            assert run.details["task_started_at"]
            result = scheduled_tasks.record_instant.get_result(result_id)
            assert result.status == tasks_framework.part("TaskResultStatus").SUCCESSFUL
            assert dt.datetime.fromisoformat(result.return_value) == run.scheduled_for
    assert len(set(result_ids)) == len(result_ids)


def test_a_run_follows_its_task_to_a_failure(start_worker):
    start_worker()
    task = task_with_callable(
        scheduled_tasks.fail, label="fails", schedule=EVERY_SECOND, userdata={"name": "x"}
    )
    task.save()
    settle([task], at_least=1)
    run = TaskRun.objects.filter(task=task).first()
    assert run.status == "failed"
    assert "RuntimeError: x fails on purpose" in run.error
    assert "Traceback" in run.traceback
    result = scheduled_tasks.fail.get_result(run.details["task_result_id"])
    assert result.status == tasks_framework.part("TaskResultStatus").FAILED


def test_a_schedule_written_in_sql_enqueues_on_the_queue_it_names(start_worker):
    start_worker()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO sisy_task (label, callable_info, schedule, timezone, userdata) VALUES "
            "('from psql', %s, %s, 'UTC', '{\"a\": 2, \"b\": 3}') RETURNING id",
            [
                json.dumps(
                    {
                        "func_type": "django_task",
                        "func_path": "tests.testapp.scheduled_tasks.add",
                        "using": {"queue_name": "sums", "priority": 7},
                    }
                ),
                EVERY_SECOND,
            ],
        )
        (task_id,) = cursor.fetchone()
    task = Task.objects.get(pk=task_id)
    settle([task], at_least=1)
    run = TaskRun.objects.filter(task=task, status="succeeded").first()
    assert run is not None, list(TaskRun.objects.filter(task=task).values("status", "error"))
    result = scheduled_tasks.add.get_result(run.details["task_result_id"])
    assert result.return_value == 5
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT queue_name, priority FROM procrastinate_jobs WHERE id = %s",
            [int(run.details["task_result_id"])],
        )
        assert cursor.fetchone() == ("sums", 7)


def test_a_broken_row_breaks_its_task_and_the_worker_serves_the_others(start_worker):
    start_worker()
    good = task_with_callable(
        scheduled_tasks.add, label="good", schedule=EVERY_SECOND, userdata={"a": 1}
    )
    good.save()
    bad = task_with_callable(
        scheduled_tasks.add, label="bad", schedule=EVERY_SECOND, userdata={"a": 1}
    )
    bad.save()
    # Written behind save()'s back: userdata that no longer bind the task's parameters.
    Task.objects.filter(pk=bad.pk).update(userdata={"z": 1})
    wait_until(lambda: Task.objects.get(pk=bad.pk).error, timeout=15)
    assert "does not bind" in Task.objects.get(pk=bad.pk).error
    settle([good], at_least=2)
    assert not TaskRun.objects.filter(task=good).exclude(status="succeeded").exists()


@override_settings(SISY_AT_MOST_ONCE_BACKENDS=["immediate"])
def test_an_immediate_backend_s_result_ends_the_run_at_once(start_worker):
    # The workers read tests/settings.py: the opt-in is given to them by the environment.
    start_worker("w1", env={"SISY_TEST_AT_MOST_ONCE": "immediate"})
    task = task_with_callable(
        scheduled_tasks.immediate_add, label="immediate", schedule=EVERY_SECOND, userdata={"a": 4}
    )
    task.save()
    settle([task], at_least=2)
    runs = TaskRun.objects.filter(task=task)
    assert {run.status for run in runs} == {"succeeded"}
    assert all(run.details["task_backend"] == "immediate" for run in runs)


def test_scheduled_on_django_tasks_db_run_by_its_own_worker(start_worker):
    pytest.importorskip("django_tasks_db", reason="django-tasks-db needs Django 5.2 or newer")
    from django_tasks_db.models import DBTaskResult

    start_worker()
    db_worker = Worker(
        "db",
        "--backend",
        "db",
        "--interval",
        "0.05",
        "--no-startup-delay",
        command=("db_worker",),
    )
    try:
        task = task_with_callable(
            scheduled_tasks.record_instant.using(backend="db"),
            label="on django-tasks-db",
            schedule=EVERY_SECOND,
            userdata={"name": "on django-tasks-db"},
        )
        task.save()
        settle([task], at_least=3)
    finally:
        db_worker.stop()
    runs = list(TaskRun.objects.filter(task=task).order_by("scheduled_for"))
    assert {run.status for run in runs} == {"succeeded"}, db_worker.output()[-3000:]
    results = {str(r.id): r for r in DBTaskResult.objects.all()}
    for run in runs:
        assert run.details["task_backend"] == "db"
        assert results[run.details["task_result_id"]].status == "SUCCESSFUL"
    hits = Hit.objects.filter(name="on django-tasks-db").order_by("scheduled_for")
    assert [h.scheduled_for for h in hits] == [run.scheduled_for for run in runs]


def test_overlap_skip_waits_for_the_task_not_for_its_enqueue(start_worker):
    # No worker serves the queue "later": the first instant's task waits there.
    start_worker("w1", "--queues", "sisy,default")
    task = task_with_callable(
        scheduled_tasks.add.using(queue_name="later"),
        label="one at a time",
        schedule=EVERY_SECOND,
        userdata={"a": 1},
    )
    task.options = {"overlap": "skip"}
    task.save()
    wait_until(lambda: TaskRun.objects.filter(task=task, status="skipped").count() >= 2, timeout=15)
    Task.objects.filter(pk=task.pk).update(enabled=False)
    running = TaskRun.objects.filter(task=task, status="running")
    assert running.count() == 1
    skipped = TaskRun.objects.filter(task=task, status="skipped")
    assert {run.details.get("reason") for run in skipped} == {"overlap"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'later'")
        assert cursor.fetchone() == (1,)
