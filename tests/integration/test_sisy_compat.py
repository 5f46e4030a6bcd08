"""Sisy 1.0b3's whole public surface, as code written for Sisy uses it.

See "The whole public surface of Sisy 1.0b3" in the project's reference and
"Moving from Sisy" in the README for what differs and why.
"""

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone

from sisy.models import (
    Task,
    funcinfo_from_string,
    get_func_info,
    task_with_callable,
    taskinfo_with_label,
)
from sisy_pg.models import database_now
from tests.integration.helpers import saved_task
from tests.testapp import jobs
from tests.testapp.models import Widget

pytestmark = pytest.mark.django_db


def finished_task(label="done"):
    task = saved_task(label=label)
    Task.objects.filter(pk=task.pk).update(enabled=False, finished_at=Now())
    task.refresh_from_db()
    return task


# --- Task properties ------------------------------------------------------------


def test_funcinfo_is_the_stored_description_as_a_copy():
    task = saved_task()
    assert task.funcinfo == task.callable_info == get_func_info(jobs.record)
    task.funcinfo["func_name"] = "changed"
    assert task.funcinfo["func_name"] == "record"


def test_funcinfo_setter_stores_a_checked_description():
    task = saved_task()
    task.funcinfo = {"func_type": "classmethod", "func_path": "tests.testapp.jobs.Things.class_job"}
    task.save()
    task.refresh_from_db()
    assert task.callable_info == get_func_info(jobs.Things.class_job)
    assert task.func_from_info() == jobs.Things.class_job


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"func_type": "function", "func_path": "tests.testapp.jobs.gone"}, "has no attribute"),
        ({"func_type": "function"}, "must be a dict with a 'func_path'"),
        ("tests.testapp.jobs.record", "must be a dict with a 'func_path'"),
        ({"func_type": "lambda", "func_path": "tests.testapp.jobs.record"}, "unknown func_type"),
    ],
)
def test_funcinfo_setter_refuses_a_wrong_description(info, message):
    task = saved_task()
    with pytest.raises(ValueError, match=message):
        task.funcinfo = info
    assert Task.objects.get().callable_info == get_func_info(jobs.record)


def test_userdata_property_reads_and_writes_a_dict():
    task = saved_task(userdata={"to": "ops"})
    assert task.userdata == {"to": "ops"}
    task.userdata = {"to": "dev", "n": [1, 2]}
    task.save()
    task.refresh_from_db()
    assert task.userdata == {"to": "dev", "n": [1, 2]}
    task.userdata = ["not", "a", "dict"]
    with pytest.raises(ValueError, match="userdata must be a dict, not list"):
        task.save()


# --- Task methods ---------------------------------------------------------------


def test_func_from_info_returns_the_live_callable():
    assert saved_task(jobs.record).func_from_info() is jobs.record
    assert saved_task(jobs.Things.static_job).func_from_info() is jobs.Things.static_job


def test_func_from_info_binds_an_instance_method_to_its_row_as_it_is_now():
    widget = Widget.objects.create(name="before")
    task = saved_task(widget.touch)
    Widget.objects.filter(pk=widget.pk).update(name="after")
    bound = task.func_from_info()
    assert bound.__func__ is Widget.touch
    assert bound.__self__.pk == widget.pk and bound.__self__.name == "after"
    widget.delete()
    with pytest.raises(ValueError, match="does not exist"):
        task.func_from_info()


def test_calc_next_run_computes_saves_and_returns_next_run():
    task = saved_task(schedule="0 0 1 1 *")
    Task.objects.filter(pk=task.pk).update(next_run=None)
    task.refresh_from_db()
    task.schedule = "* * * * * */10"
    next_run = task.calc_next_run()
    assert next_run == Task.objects.get(pk=task.pk).next_run == task.next_run
    assert next_run.second % 10 == 0
    assert dt.timedelta(0) < next_run - database_now() <= dt.timedelta(seconds=10)
    assert Task.objects.get(pk=task.pk).schedule == "* * * * * */10"


def test_calc_next_run_of_a_disabled_task_is_none():
    task = saved_task(enabled=False)
    assert task.calc_next_run() is None
    assert Task.objects.get(pk=task.pk).next_run is None


def test_run_asap_sets_next_run_to_the_database_now():
    task = saved_task()
    before = database_now()
    assert task.run_asap() is None
    assert before <= task.next_run <= database_now()
    assert Task.objects.get(pk=task.pk).next_run == task.next_run


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: saved_task(label="off", enabled=False),
            r"Task \d+: off cannot run: it is paused \(resume it first\)",
        ),
        (finished_task, r"Task \d+: done cannot run: it is finished \(its iterations are used up"),
        (lambda: task_with_callable(jobs.record), r"Task \(unsaved\).*cannot run: save it first"),
    ],
)
def test_run_asap_refuses_with_the_reason(make, message):
    task = make()
    with pytest.raises(ValueError, match=message):
        task.run_asap()
    assert not Task.objects.exclude(next_run=None).exists()


def test_run_asap_obeys_the_row_not_a_stale_copy():
    task = saved_task()
    Task.objects.filter(pk=task.pk).update(enabled=False)
    with pytest.raises(ValueError, match="it is paused"):
        task.run_asap()
    assert not task.enabled


def test_queryset_run_now_fires_only_runnable_tasks():
    runnable = saved_task(label="runnable")
    saved_task(label="disabled", enabled=False)
    finished_task()
    assert Task.objects.run_now() == 1
    assert list(Task.objects.exclude(next_run=None)) == [Task.objects.get(pk=runnable.pk)]
    assert set(Task.objects.not_runnable().values_list("label", flat=True)) == {
        "disabled",
        "done",
    }


def test_admin_run_now_reports_what_ran_and_why_the_others_did_not(admin_client):
    tasks = [
        saved_task(label="runnable"),
        saved_task(label="off", enabled=False),
        finished_task("done"),
    ]
    response = admin_client.post(
        reverse("admin:sisy_task_changelist"),
        {"action": "run_now", "_selected_action": [t.pk for t in tasks]},
        follow=True,
    )
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "1 task(s) will run now.",
        (
            "1 task(s) not run, finished (its iterations are used up or its end_running has "
            f"passed; change them to run it again): Task {tasks[2].pk}: done"
        ),
        f"1 task(s) not run, paused (resume it first): Task {tasks[1].pk}: off",
    ]
    assert Task.objects.get(pk=tasks[0].pk).next_run <= database_now()


# --- Class methods and their messages ---------------------------------------------


def test_run_once_and_run_iterations_return_the_saved_task():
    once = Task.run_once(jobs.record)
    assert isinstance(once, Task) and once.pk and once.iterations == 1
    three = Task.run_iterations(jobs.record, iterations=3)
    assert Task.objects.get(pk=three.pk).iterations == 3


def test_delay_until_is_judged_by_the_database_clock(monkeypatch):
    db_now = database_now()
    monkeypatch.setattr(timezone, "now", lambda: db_now + dt.timedelta(days=1))
    in_an_hour = db_now + dt.timedelta(hours=1)
    assert Task.run_once(jobs.record, delay_until=in_an_hour).next_run == in_an_hour
    monkeypatch.setattr(timezone, "now", lambda: db_now - dt.timedelta(days=1))
    with pytest.raises(ValueError, match="Task cannot start running in the past"):
        Task.run_once(jobs.record, delay_until=db_now)


def test_a_new_task_is_planned_by_the_database_clock(monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: database_now() - dt.timedelta(days=1))
    task = Task.run_once(jobs.record)
    assert abs(task.next_run - database_now()) < dt.timedelta(seconds=5)
    every_ten = saved_task(schedule="* * * * * */10")
    assert dt.timedelta(0) < every_ten.next_run - database_now() <= dt.timedelta(seconds=10)


# --- Labels -------------------------------------------------------------------------


def test_labels_are_unique_so_taskinfo_with_label_finds_one_task():
    """A difference from Sisy, which allowed two tasks with one label."""
    first = saved_task(label="same")
    assert taskinfo_with_label("same") == get_func_info(jobs.record)
    with pytest.raises(
        ValueError, match=rf"a task labelled 'same' already exists \(id {first.pk}\)"
    ):
        saved_task(jobs.Things.class_job, label="same")
    assert Task.objects.filter(label="same").count() == 1
    assert taskinfo_with_label("same") == get_func_info(jobs.record)
    with pytest.raises(Task.DoesNotExist):
        taskinfo_with_label("nobody")


# --- Module helpers ---------------------------------------------------------------


def test_get_func_info_is_what_task_with_callable_stores():
    widget = Widget.objects.create()
    for the_callable in (jobs.record, jobs.Things.class_job, jobs.Things.static_job, widget.touch):
        assert get_func_info(the_callable) == task_with_callable(the_callable).callable_info
    assert get_func_info(widget.touch)["model_pk"] == widget.pk


def test_funcinfo_from_string_describes_a_dotted_path():
    assert funcinfo_from_string("tests.testapp.jobs.record") == get_func_info(jobs.record)
    widget = Widget.objects.create()
    info = funcinfo_from_string("tests.testapp.models.Widget.touch", pk_override=widget.pk)
    assert info == get_func_info(widget.touch)
