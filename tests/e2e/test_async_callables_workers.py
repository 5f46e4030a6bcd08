"""Async callables run by a real worker: awaited, retried, held to their timeout, never stalling it."""

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.integration.helpers import one_off
from tests.testapp import async_jobs, jobs
from tests.testapp.models import AsyncWidget, Hit, Widget

EVERY_SECOND = "* * * * * *"


def runs(task, **filters):
    return TaskRun.objects.filter(task=task, **filters).order_by("scheduled_for")


def history(*tasks):
    return "\n".join(
        f"{r.task_id} {r.scheduled_for:%H:%M:%S.%f} {r.status} {r.started_at} {r.finished_at} "
        f"{r.error!r} {r.details}"
        for r in TaskRun.objects.filter(task__in=tasks).order_by("scheduled_for")
    )


def test_async_callables_of_every_kind_are_awaited(start_worker):
    worker = start_worker()
    row = AsyncWidget.objects.create()
    tasks = [
        one_off(async_jobs.record, "async function"),
        one_off(async_jobs.AsyncThings.class_job, "async classmethod"),
        one_off(async_jobs.AsyncThings.static_job, "async staticmethod"),
        one_off(async_jobs.returns_a_coroutine, "sync function returning a coroutine"),
        one_off("tests.testapp.models.AsyncWidget.touch", "async method", pk_override=row.pk),
    ]
    wait_until(
        lambda: (
            TaskRun.objects.filter(task__in=tasks, status__in=TaskRun.FINAL_STATUSES).count()
            == len(tasks)
        ),
        timeout=15,
    )
    dump = history(*tasks) + "\n" + worker.output()[-3000:]
    names = {
        "async_record",
        "async_class_job",
        "async_static_job",
        "returns_a_coroutine",
        "AsyncWidget.touch",
    }
    for task in tasks:
        run = runs(task).get()
        assert run.status == "succeeded", dump
        hit = Hit.objects.get(task_id=task.pk)  # the coroutine ran to its end
        assert hit.run_id == run.pk and hit.name in names, dump
        # The log line of a sync callable's run.
        assert f"Run {run.pk} of task {task.pk} ({task.label}) for " in worker.output(), dump
    assert Widget.objects.get(pk=row.pk).touched == 1
    assert "was never awaited" not in worker.output()


def test_an_async_callable_that_raises_fails_with_its_traceback_and_is_retried(start_worker):
    worker = start_worker()
    task = one_off(async_jobs.fail, "async fails", options={"retries": 1, "retry_delay": 0.3})
    run = wait_until(lambda: runs(task, status__in=TaskRun.FINAL_STATUSES).first(), timeout=20)
    dump = history(task) + "\n" + worker.output()[-3000:]
    assert run.status == "failed", dump
    assert run.error == "RuntimeError: boom from an async callable", dump
    assert "async_jobs.py" in run.traceback and "raise RuntimeError" in run.traceback, dump
    assert Hit.objects.filter(name="async_fail", run_id=run.pk).count() == 2, dump
    assert run.details["attempt"] == 2, dump
    assert [a["error"] for a in run.details["attempts"]] == [
        "RuntimeError: boom from an async callable"
    ], dump
    log = worker.output()
    assert log.count(f"of task {task.pk} ({task.label}) for ") == 2, log  # retrying, failed
    assert log.count("raise RuntimeError") == 2, log


def test_an_async_callable_that_blocks_stalls_neither_the_worker_nor_other_runs(start_worker):
    """time.sleep in a coroutine: had it run on the worker's event loop, nothing else would
    start until it returned. A sync task every second keeps firing beside it."""
    start_worker("w1", "--concurrency", "2")
    ticker = task_with_callable(jobs.record, label="ticker", schedule=EVERY_SECOND)
    ticker.save()
    wait_until(lambda: runs(ticker, status="succeeded").exists(), timeout=10)
    blocker = one_off(async_jobs.blocking, "async blocking", userdata={"seconds": 4})
    run = wait_until(lambda: runs(blocker, status__in=TaskRun.FINAL_STATUSES).first(), timeout=20)
    Task.objects.filter(pk=ticker.pk).update(enabled=False)
    dump = history(blocker, ticker)
    assert run.status == "succeeded", dump
    beside = runs(
        ticker, status="succeeded", started_at__gt=run.started_at, started_at__lt=run.finished_at
    )
    assert beside.count() >= 2, dump


def test_an_async_callable_is_held_to_its_timeout(start_worker):
    """As a sync callable: the run is closed at its timeout; its return is noted later."""
    start_worker()
    task = one_off(
        async_jobs.blocking, "async slow", options={"timeout": 1}, userdata={"seconds": 3}
    )
    run = wait_until(lambda: runs(task, details__returned="succeeded").first(), timeout=20)
    dump = history(task)
    assert run.status == "timed_out" and run.error.startswith("timed out"), dump
    assert (run.finished_at - run.started_at).total_seconds() < 3, dump
    assert Hit.objects.filter(name="async_blocking", run_id=run.pk).count() == 1, dump
