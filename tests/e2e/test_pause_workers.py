"""A pause with an end, with a real worker: the task pauses, then resumes by itself."""

import re

from sisy_pg.models import TaskRun
from tests.helpers import wait_until
from tests.integration.helpers import make_task, pause_of, sisy


def test_sisy_pause_until_pauses_then_the_task_resumes_by_itself(start_worker):
    worker = start_worker()
    task = make_task("* * * * * *", label="every second")
    wait_until(lambda: TaskRun.objects.filter(task=task, status="succeeded").exists(), timeout=10)
    said = sisy("pause", "every second", "--note", "deploy freeze", "--until", "3s")
    assert "note: 'deploy freeze'" in said and "resumes it by itself at" in said
    shown = sisy("show", "every second")
    assert re.search(r"^pause note: +deploy freeze$", shown, flags=re.MULTILINE), shown
    assert re.search(r"^paused until: +\S+, then resumes by itself$", shown, flags=re.MULTILINE)
    assert "paused until " in sisy("list") and ": deploy freeze" in sisy("list")
    pause = pause_of(task)
    # Resumed at its end by the worker's planner, which woke up for it (no
    # other task would have woken it before SISY_PLANNER_MAX_SLEEP).
    wait_until(
        lambda: TaskRun.objects.filter(
            task=task, status="succeeded", scheduled_for__gte=pause.until
        ).exists(),
        timeout=3 + 5,
    )
    assert "its pause ended" in worker.output()
    task.refresh_from_db()
    assert task.enabled and task.pause_info is None
    assert "pause note" not in sisy("show", "every second")
    # No instant of the pause ran: those claimed ahead were cancelled.
    during = TaskRun.objects.filter(
        task=task, scheduled_for__gt=pause.paused_at, scheduled_for__lt=pause.until
    )
    assert set(during.values_list("status", flat=True)) <= {"cancelled"}
