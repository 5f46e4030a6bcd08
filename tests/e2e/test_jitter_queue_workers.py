"""Jitter and a task's queue with real workers: starts spread out, a queue served by its own worker."""

import datetime as dt

from sisy_pg.models import TaskRun, task_with_callable
from tests.e2e.helpers import Worker
from tests.helpers import wait_until
from tests.testapp import jobs

EVERY_FIVE_SECONDS = "* * * * * */5"  # sisy's sixth field is seconds


def test_jitter_spreads_the_starts_and_a_queue_has_its_own_worker(start_worker):
    start_worker("w1", "--queues", "sisy", "--concurrency", "16")
    # A worker of the "heavy" queue alone: it runs jobs, plans nothing.
    heavy = Worker("heavy", "--queues", "heavy", "--concurrency", "2")
    try:
        wait_until(lambda: "sisy planner not started" in heavy.output(), timeout=60)
        spread = []
        for n in range(8):
            task = task_with_callable(jobs.record, label=f"jitter {n}", schedule=EVERY_FIVE_SECONDS)
            task.options = {"jitter": 2}
            task.save()
            spread.append(task)
        routed = task_with_callable(jobs.record, label="heavy", schedule="* * * * * *")
        routed.options = {"queue": "heavy"}
        routed.save()
        wait_until(
            lambda: (
                TaskRun.objects.filter(task__in=spread, status="succeeded").count() >= len(spread)
                and TaskRun.objects.filter(task=routed, status="succeeded").count() >= 2
            ),
            timeout=20,
        )
        runs = list(TaskRun.objects.filter(task__in=spread, status="succeeded"))
        for run in runs:
            delay = dt.timedelta(seconds=run.details["jitter"])
            assert dt.datetime.fromisoformat(run.details["due_at"]) == run.scheduled_for + delay
            # Never before its delay (the database judges); then well within the grace.
            assert delay <= run.started_at - run.scheduled_for < delay + dt.timedelta(seconds=10)
            assert run.worker.endswith(":w1")
        delays = sorted(run.details["jitter"] for run in runs)
        assert delays[0] >= 0 and delays[-1] <= 2 and delays[-1] - delays[0] > 0.2
        routed_runs = TaskRun.objects.filter(task=routed, status="succeeded")
        assert {run.worker.rsplit(":", 1)[1] for run in routed_runs} == {"heavy"}
    finally:
        heavy.stop()
