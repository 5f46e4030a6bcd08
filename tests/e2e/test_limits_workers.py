"""Bounded input (sisy_pg/limits.py) and a real worker: a task beyond the limits is broken, the others run."""

import pytest

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.helpers import wait_until
from tests.integration.helpers import TOO_DEEP_TEXT, before_the_limits, insert_raw
from tests.testapp import jobs


@pytest.mark.django_db(transaction=True)
def test_a_worker_breaks_a_task_beyond_the_limits_and_runs_the_others(start_worker):
    worker = start_worker()
    with before_the_limits("userdata", "options"):
        deep_userdata = insert_raw("deep userdata", userdata=TOO_DEEP_TEXT, schedule="* * * * * *")
        deep_options = insert_raw("deep options", options=TOO_DEEP_TEXT, schedule="* * * * * *")
        healthy = task_with_callable(jobs.record, label="healthy", schedule="* * * * * *")
        healthy.save()
        broken = wait_until(
            lambda: (
                dict(
                    Task.objects.filter(pk__in=[deep_userdata, deep_options])
                    .exclude(error="")
                    .values_list("label", "error")
                )
                if Task.objects.filter(pk__in=[deep_userdata, deep_options], error="").count() == 0
                else None
            ),
            timeout=30,
        )
        assert broken == {
            "deep userdata": "userdata is nested more than 32 levels deep (at most 32): "
            "the row is beyond the limits of sisy_task",
            "deep options": "options is nested more than 32 levels deep (at most 32): "
            "the row is beyond the limits of sisy_task",
        }
        fired = healthy.runs.filter(status="succeeded").count()
        wait_until(lambda: healthy.runs.filter(status="succeeded").count() >= fired + 2, 30)
        for task_id in (deep_userdata, deep_options):
            runs = TaskRun.objects.filter(task_id=task_id)
            # Failed (the reason on the run), the others cancelled: none left running.
            assert set(runs.values_list("status", flat=True)) <= {"failed", "cancelled"}
            assert runs.filter(status="failed", error__startswith="broken: ").exists()
        assert Task.objects.get(pk=deep_userdata).next_run is None
        assert "RecursionError" not in worker.output()
