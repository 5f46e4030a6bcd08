"""Sisy's API with a real worker: a Sisy callable's channel, message id and time; run_asap then the schedule."""

import pytest

from sisy.models import (
    Task,
    TaskRun,
)
from tests.helpers import wait_until
from tests.integration.helpers import FAR_AWAY, saved_task
from tests.testapp import jobs
from tests.testapp.models import Hit

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)
def test_a_sisy_callable_reads_channel_message_id_and_ts(start_worker):
    start_worker()
    task = Task.run_once(jobs.sisy_style)
    run = wait_until(
        lambda: TaskRun.objects.filter(task=task, status__in=TaskRun.FINAL_STATUSES).first(),
        timeout=10,
    )
    assert run.status == "succeeded", run.error
    hit = Hit.objects.get(name="sisy_style")
    assert hit.task_id == task.pk
    assert hit.scheduled_for == run.scheduled_for  # ts is the run's instant, in epoch seconds


@pytest.mark.django_db(transaction=True)
def test_run_asap_fires_once_then_the_schedule_resumes(start_worker):
    start_worker()
    task = saved_task(schedule=FAR_AWAY)
    scheduled = task.next_run
    task.run_asap()
    wait_until(lambda: TaskRun.objects.filter(task=task, status="succeeded").exists(), timeout=10)
    wait_until(lambda: Task.objects.get(pk=task.pk).next_run == scheduled, timeout=5)
    assert TaskRun.objects.filter(task=task).count() == 1
    assert Hit.objects.filter(task_id=task.pk).count() == 1
