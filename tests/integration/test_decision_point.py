"""One decision point: run now, pause, resume and clear error give the same answer at every edge.

Each (task state, action) is tried through psql's functions, the Python API,
``manage.py sisy`` and the admin's buttons, each on a task of its own: the
outcome (done, or the refusal and its words) and what the row looks like
afterwards must be the same everywhere, and equal the table below.
"""

import datetime as dt
import io

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse

from sisy_pg.models import ActionRefused, Task, TaskRun, task_with_callable
from sisy_pg.vocabulary import Action, Refusal, TaskState
from tests.integration.helpers import sql
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

FAR_AWAY = "0 0 1 1 *"


def make(state, label):
    """A task in ``state`` (one of the states an action decides on)."""
    task = task_with_callable(jobs.record, label=label, schedule=FAR_AWAY)
    task.save()
    if state in ("broken", "broken_paused"):
        sql("UPDATE sisy_task SET error = 'gone', next_run = NULL WHERE id = %s", [task.pk])
    if state in ("paused", "broken_paused"):
        sql("UPDATE sisy_task SET enabled = false WHERE id = %s", [task.pk])
    if state == "finished":
        sql("UPDATE sisy_task SET enabled = false, finished_at = now() WHERE id = %s", [task.pk])
    task.refresh_from_db()
    return task


STATES = ["scheduled", "paused", "finished", "broken", "broken_paused"]
# (state, action) -> the refusal, or None when the action is done.
EXPECTED = {
    ("scheduled", Action.RUN_NOW): None,
    ("scheduled", Action.PAUSE): None,
    ("scheduled", Action.RESUME): Refusal.NOT_PAUSED,
    ("scheduled", Action.CLEAR_ERROR): Refusal.NOT_BROKEN,
    ("paused", Action.RUN_NOW): Refusal.PAUSED,
    ("paused", Action.PAUSE): Refusal.ALREADY_PAUSED,
    ("paused", Action.RESUME): None,
    ("paused", Action.CLEAR_ERROR): Refusal.NOT_BROKEN,
    ("finished", Action.RUN_NOW): Refusal.FINISHED,
    ("finished", Action.PAUSE): Refusal.FINISHED,
    ("finished", Action.RESUME): Refusal.FINISHED,
    ("finished", Action.CLEAR_ERROR): Refusal.NOT_BROKEN,
    ("broken", Action.RUN_NOW): Refusal.BROKEN,
    ("broken", Action.PAUSE): None,
    ("broken", Action.RESUME): Refusal.BROKEN,
    ("broken", Action.CLEAR_ERROR): None,
    ("broken_paused", Action.RUN_NOW): Refusal.BROKEN,
    ("broken_paused", Action.PAUSE): Refusal.ALREADY_PAUSED,
    ("broken_paused", Action.RESUME): None,
    ("broken_paused", Action.CLEAR_ERROR): None,
}
# What the row looks like after a done action: (enabled, error, next_run due now).
AFTER = {
    Action.RUN_NOW: lambda before: (True, "", True),
    Action.PAUSE: lambda before: (False, before.error, False),
    Action.RESUME: lambda before: (True, "", False),  # planned again by a planner
    Action.CLEAR_ERROR: lambda before: (before.enabled, "", False),
}


def row(task):
    (enabled, error, due), *_ = sql(
        "SELECT enabled, error, coalesce(next_run <= clock_timestamp(), false) "
        "FROM sisy_task WHERE id = %s",
        [task.pk],
    )
    return enabled, error, due


def by_sql(task, action):
    function = f"sisy_{action.value}_v1"
    ((done, refusal),) = sql(f"SELECT done, refusal FROM {function}(%s)", [task.label])
    assert done is (refusal is None)
    return Refusal(refusal) if refusal else None


def by_python(task, action):
    try:
        task.act(action)
    except ActionRefused as refused:
        message, refusal = str(refused), refused.refusal
    else:
        return None
    assert message.endswith(f"it is {refusal.label}")
    return refusal


def by_cli(task, action):
    name = action.value.replace("_", "-") if action != Action.RUN_NOW else "run"
    try:
        # By id: the CLI takes an id wherever it takes a label.
        call_command("sisy", name, str(task.pk), stdout=io.StringIO())
    except CommandError as refused:
        return next(r for r in Refusal if f"it is {r.label}" in str(refused))
    return None


def by_admin(task, action, client):
    url = reverse("admin:sisy_task_do", args=[task.pk, action.value])
    response = client.post(url, follow=True)
    assert response.status_code == 200
    (message,) = [str(m) for m in get_messages(response.wsgi_request)]
    entry = LogEntry.objects.filter(object_id=str(task.pk)).latest("action_time")
    assert entry.user.username == "admin"
    refusal = next((r for r in Refusal if f", {r.label}: " in message), None)
    if refusal is None:
        assert entry.get_change_message().endswith("(button)")
    else:
        assert entry.get_change_message().endswith(f"(button): it is {refusal.label}")
    return refusal


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
@pytest.mark.parametrize("state", STATES)
def test_every_edge_decides_alike(state, action, admin_client):
    edges = {
        "sql": by_sql,
        "python": by_python,
        "cli": by_cli,
        "admin": lambda task, action: by_admin(task, action, admin_client),
    }
    outcomes, rows = {}, {}
    for edge, act in edges.items():
        task = make(state, f"{state} by {edge}")
        before = Task.objects.get(pk=task.pk)
        outcomes[edge] = act(task, action)
        rows[edge] = row(task)
        if outcomes[edge] is None:
            assert rows[edge] == AFTER[action](before), edge
        else:
            assert rows[edge] == row_of(before), f"{edge} changed a task it refused"
    assert set(outcomes.values()) == {EXPECTED[state, action]}, outcomes
    assert len(set(rows.values())) == 1, rows


def row_of(task):
    return task.enabled, task.error, task.next_run is not None and task.next_run <= now()


def now():
    return sql("SELECT clock_timestamp()")[0][0]


def test_run_asap_on_a_broken_task_refuses_and_keeps_it_broken():
    """The Why's case: run_asap() fired a broken task and cleared its error silently."""
    task = make("broken", "Broken")
    with pytest.raises(ActionRefused, match="it is broken"):
        task.run_asap()
    assert row(task) == (True, "gone", False)
    assert task.state == TaskState.BROKEN


def test_queryset_actions_count_what_they_did():
    tasks = [make(state, state) for state in STATES]
    assert Task.objects.pause() == 2  # scheduled, broken
    assert Task.objects.resume() == 4  # all but finished
    assert Task.objects.filter(pk=tasks[0].pk).run_now() == 1
    results = Task.objects.order_by("pk").act(Action.CLEAR_ERROR)
    assert [r.refusal for r in results] == [Refusal.NOT_BROKEN] * 5  # resume mended them


def test_state_is_the_database_s_definition_everywhere():
    tasks = {state: make(state, state) for state in STATES}
    running = make("scheduled", "running")
    TaskRun.objects.create(task=running, scheduled_for=now(), status="running")
    failing = make("scheduled", "failing")
    TaskRun.objects.create(
        task=failing, scheduled_for=now() - dt.timedelta(minutes=1), status="timed_out"
    )
    unplanned = make("scheduled", "unplanned")
    sql("UPDATE sisy_task SET next_run = NULL WHERE id = %s", [unplanned.pk])
    expected = {
        "scheduled": TaskState.SCHEDULED,
        "paused": TaskState.PAUSED,
        "finished": TaskState.FINISHED,
        "broken": TaskState.BROKEN,
        "broken_paused": TaskState.BROKEN,
        "running": TaskState.RUNNING,
        "failing": TaskState.FAILING,
        "unplanned": TaskState.UNPLANNED,
    }
    view = dict(sql("SELECT label, state FROM sisy_task_status"))
    annotated = {t.label: t.state for t in Task.objects.with_status()}
    one_by_one = {t.label: t.state for t in Task.objects.all()}
    assert view == annotated == one_by_one == expected
    assert {t.label for t in Task.objects.in_state(TaskState.BROKEN)} == {
        "broken",
        "broken_paused",
    }
    assert tasks  # every state above was made
