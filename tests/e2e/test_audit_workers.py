"""The audit of a real worker: what it decides is recorded, its planning is not."""

from __future__ import annotations

import pytest

from sisy_pg.models import Task
from tests.helpers import wait_until
from tests.integration.helpers import changes_of
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_records_what_it_decides_and_not_its_planning(start_worker):
    start_worker("audited")
    task = Task.run_iterations(jobs.record, iterations=2, label="twice", schedule="* * * * * *")
    wait_until(lambda: Task.objects.get(pk=task.pk).finished_at is not None, timeout=10)
    # Created, then finished by the planner: its next_run, fire_count and
    # last_run, written every second, are no change of the task's.
    recorded = changes_of(task.pk)
    assert [(op, via) for op, _, via, _ in recorded] == [("insert", "api"), ("update", "worker")]
    assert recorded[1][1].endswith("(sisy-planner)")
    assert recorded[1][3] == {"enabled": {"old": True, "new": False}}
    assert Task.objects.get(pk=task.pk).fire_count == 2
