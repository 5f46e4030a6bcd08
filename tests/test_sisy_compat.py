"""Sisy 1.0b3's whole public surface, as code written for Sisy uses it.

See "The whole public surface of Sisy 1.0b3" in the project's reference and
"Moving from Sisy" in the README for what differs and why.
"""

import datetime as dt
import itertools
import re
import sys

import pytest
from django.contrib.messages import get_messages
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone

import sisy.models
import sisy_pg.models
from sisy.models import (
    Task,
    TaskRun,
    func_from_string,
    funcinfo_from_string,
    get_func_info,
    get_member,
    get_module_member_by_dottedpath,
    task_with_callable,
    taskinfo_with_label,
)
from sisy_pg.models import database_now
from tests.conftest import wait_until
from tests.testapp import jobs
from tests.testapp.models import Hit, Widget

pytestmark = pytest.mark.django_db

SISY_NAMES = [
    "Task",
    "TaskRun",
    "func_from_string",
    "funcinfo_from_string",
    "get_func_info",
    "get_member",
    "get_module_member_by_dottedpath",
    "task_with_callable",
    "taskinfo_with_label",
]
FAR_AWAY = "0 0 1 1 *"  # once a year


_numbers = itertools.count(1)


def saved_task(the_callable=jobs.record, **fields):
    # Labels are unique: each task of a test gets its own.
    task = task_with_callable(
        the_callable, label=f"task {next(_numbers)}", schedule=fields.pop("schedule", FAR_AWAY)
    )
    for name, value in fields.items():
        setattr(task, name, value)
    task.save()
    return task


def finished_task(label="done"):
    task = saved_task(label=label)
    Task.objects.filter(pk=task.pk).update(enabled=False, finished_at=Now())
    task.refresh_from_db()
    return task


@pytest.mark.parametrize("name", SISY_NAMES)
def test_every_public_name_of_sisy_models_is_served_by_both_modules(name):
    assert name in sisy.models.__all__
    assert getattr(sisy.models, name) is getattr(sisy_pg.models, name)


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


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests.testapp.jobs.record", jobs.record),
        ("tests.testapp.jobs.Things.class_job", jobs.Things.class_job),
        ("tests.testapp.jobs.Things.static_job", jobs.Things.static_job),
    ],
)
def test_func_from_string_and_get_module_member_by_dottedpath(path, expected):
    assert func_from_string(path) == expected
    assert get_module_member_by_dottedpath(path) == expected


def test_get_module_member_by_dottedpath_returns_any_member():
    assert get_module_member_by_dottedpath("tests.testapp.jobs.NOT_CALLABLE") == 42
    assert get_module_member_by_dottedpath("tests.testapp.jobs.Things") is jobs.Things
    assert get_module_member_by_dottedpath("tests.testapp.models.Widget.touch") is Widget.touch


def test_func_from_string_consults_no_allowlist(monkeypatch):
    """It returns the object to its caller, neither stores nor calls it (as Sisy's)."""
    import tests

    with pytest.raises(ValueError, match=r"^refused: "):
        funcinfo_from_string("tests.forbidden_jobs.job")
    assert "tests.forbidden_jobs" not in sys.modules
    # Imported here: forgotten afterwards, for the tests that check nothing imports it.
    monkeypatch.setitem(sys.modules, "tests.forbidden_jobs", None)
    monkeypatch.delitem(sys.modules, "tests.forbidden_jobs")
    monkeypatch.setattr(tests, "forbidden_jobs", None, raising=False)
    monkeypatch.delattr(tests, "forbidden_jobs")
    assert func_from_string("tests.forbidden_jobs.job").__module__ == "tests.forbidden_jobs"


# What Sisy 1.0b3's func_from_string raised for each (its texts; its own tests,
# run verbatim by test_sisy_original_tests.py, match some of them).
SISY_REFUSALS = [
    ("bogus", "Need full dotted path to task function"),
    ("nowhere.at_all.func", "Module nowhere not found"),
    ("tests.testapp", "Cannot call module directly"),
    ("tests.testapp.jobs.Things", "Cannot call class directly"),
    ("tests.testapp.jobs.gone", "Function gone is not a member of tests.testapp.jobs"),
    ("tests.testapp.jobs.Gone.job", "Class Gone is not a member of tests.testapp.jobs"),
    (
        "tests.testapp.jobs.Things.gone",
        "Function gone is not a member of tests.testapp.jobs.Things",
    ),
    (
        "tests.testapp.jobs.NOT_CALLABLE",
        "tests.testapp.jobs.NOT_CALLABLE (class 'int') is not a callable object",
    ),
    (
        "tests.testapp.models.Widget.name",
        (
            "tests.testapp.models.Widget.name "
            "(class 'django.db.models.query_utils.DeferredAttribute') is not a callable object"
        ),
    ),
    ("tests.testapp.jobs.wrong_name", "Task function must have one parameter, named 'message'"),
    (
        "tests.testapp.jobs.two_params",
        "Improper signature for task function (needs only 'message')",
    ),
    ("tests.testapp.jobs.no_params", "Improper signature for task function (needs only 'message')"),
    (
        "tests.testapp.models.Widget.touch",
        "Can't call instance method without an instance! (Try sisy.models.task_with_callable)",
    ),
    (
        "tests.testapp.models.Widget.two_params",
        "Improper signature for task function (needs only 'message')",
    ),
    (
        "tests.testapp.jobs.Things.plain_instance_job",
        (
            "Can only call instance methods of Django model objects, "
            "not tests.testapp.jobs.Things.plain_instance_job."
        ),
    ),
]


@pytest.mark.parametrize(("path", "message"), SISY_REFUSALS)
def test_sisy_helpers_refuse_with_sisys_messages(path, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        func_from_string(path)
    if path.startswith("tests.testapp."):  # allowed: the describing helpers say the same
        for helper in (funcinfo_from_string, get_func_info):
            with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
                helper(path)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.testapp.jobs.wrong_name", "(it takes: msg)"),
        ("tests.testapp.models.Widget.touch", "pass pk_override="),
        ("tests.testapp.jobs.NOT_CALLABLE", "is not callable (it is int)"),
    ],
)
def test_sisy_pg_api_keeps_its_own_messages(path, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        task_with_callable(path)


def test_sisy_helpers_refuse_what_sisy_accepted_but_the_worker_would_not_call():
    """Sisy followed any attribute: these say why the rule refuses them."""
    with pytest.raises(ValueError, match="is nested too deep"):
        func_from_string("tests.testapp.models.uuid.os.system")
    with pytest.raises(ValueError, match="is not a class"):
        func_from_string("tests.testapp.jobs.__builtins__.update")


@pytest.mark.parametrize(
    ("helper", "argument", "message"),
    [
        (func_from_string, "not a path", "is not a dotted path"),
        (func_from_string, 42, "path must be a dotted string, not int"),
        (
            get_module_member_by_dottedpath,
            "tests.testapp.jobs.Things.gone",
            "has no attribute 'gone'",
        ),
        (funcinfo_from_string, jobs.record, "dotted_path must be a string, not function"),
        (get_func_info, jobs.Things, "Cannot call class directly"),
        (get_func_info, jobs, "Cannot call module directly"),
    ],
)
def test_helpers_raise_value_error_naming_the_problem(helper, argument, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        helper(argument)


def test_get_member():
    assert get_member(jobs, "record") is jobs.record
    assert get_member(jobs.Things, "class_job") == jobs.Things.class_job
    with pytest.raises(
        ValueError, match=re.escape("'tests.testapp.jobs.Things' has no attribute 'nope'")
    ):
        get_member(jobs.Things, "nope")


# --- With a real worker -------------------------------------------------------------


@pytest.mark.e2e
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


@pytest.mark.e2e
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
