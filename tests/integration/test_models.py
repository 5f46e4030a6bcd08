"""Sisy's Python API: task_with_callable, taskinfo_with_label, run_once, run_iterations."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from sisy.models import Task, task_with_callable, taskinfo_with_label
from sisy_pg.models import TaskDefinitionError, TaskRun
from tests.testapp import jobs
from tests.testapp.models import Widget

pytestmark = pytest.mark.django_db


def test_task_with_callable_returns_an_unsaved_task_with_sisy_defaults():
    task = task_with_callable(jobs.record)
    assert task.pk is None and not Task.objects.exists()
    assert task.label == "tests.testapp.jobs.record"
    assert task.schedule == "* * * * *"
    assert task.timezone == "Europe/Paris"  # settings.TIME_ZONE
    assert task.userdata == {}
    assert task.enabled and task.wait_for_schedule and task.iterations == 0
    task.save()
    assert task.next_run is not None and task.next_run > timezone.now()
    assert task.next_run.second == 0


def test_label_schedule_and_userdata_are_kept():
    task = task_with_callable(
        jobs.record, label="Daily", schedule="30 0 * * *", userdata={"a": [1, 2]}
    )
    task.save()
    task.refresh_from_db()
    assert (task.label, task.schedule, task.userdata) == ("Daily", "30 0 * * *", {"a": [1, 2]})
    local = task.next_run.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert (local.hour, local.minute) == (0, 30)  # 00:30 in Paris (winter time)


@pytest.mark.parametrize("userdata", [[1, 2], "text", 3])
def test_userdata_must_be_a_dict(userdata):
    with pytest.raises(ValueError, match="userdata must be a dict"):
        task_with_callable(jobs.record, userdata=userdata)


def test_userdata_checked_again_on_save():
    task = task_with_callable(jobs.record)
    task.userdata = ["not", "a", "dict"]
    with pytest.raises(ValueError, match="userdata must be a dict"):
        task.save()
    assert not Task.objects.exists()


def test_options_must_be_a_dict_in_python_and_in_the_database():
    task = task_with_callable(jobs.record)
    task.options = ["not", "a", "dict"]
    with pytest.raises(ValueError, match="options must be a dict"):
        task.save()
    task.options = {}
    task.save()
    with pytest.raises(IntegrityError, match="sisy_task_options_valid"), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(options=["raw", "update"])


def test_invalid_schedule_is_a_value_error_at_creation():
    with pytest.raises(ValueError, match="is not valid cron"):
        task_with_callable(jobs.record, schedule="61 * * * *")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schedule", "* * *", "has 3 field(s)"),
        ("timezone", "Mars/Olympus", "unknown time zone"),
        (
            "end_running",
            timezone.now() - dt.timedelta(days=400),
            "end_running is before start_running",
        ),
        (
            "callable_info",
            {"func_type": "function", "func_path": "tests.testapp.jobs.gone"},
            "has no attribute 'gone'",
        ),
        ("start_running", dt.datetime(2030, 1, 1), "must be an aware datetime"),
    ],
)
def test_invalid_definition_refused_on_save_and_nothing_saved(field, value, message):
    task = task_with_callable(jobs.record)
    task.start_running = timezone.now() - dt.timedelta(days=1)
    setattr(task, field, value)
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert isinstance(info.value, ValueError) and isinstance(info.value, ValidationError)
    assert message in str(info.value.message_dict[field])
    assert not Task.objects.exists()


def test_clean_reports_errors_per_field_for_forms():
    task = task_with_callable(jobs.record)
    task.schedule, task.timezone = "nope", "Nowhere/Land"
    with pytest.raises(ValidationError) as info:
        task.clean()
    assert set(info.value.message_dict) == {"schedule", "timezone"}


def test_taskinfo_with_label_has_sisy_keys_and_model_pk():
    widget = Widget.objects.create()
    task_with_callable("tests.testapp.models.Widget.touch", label="W", pk_override=widget.pk).save()
    info = taskinfo_with_label("W")
    assert set(info) == {
        "func_type",
        "module_name",
        "class_name",
        "class_path",
        "func_name",
        "func_path",
        "model_pk",
    }
    assert info["model_pk"] == widget.pk and info["func_type"] == "instancemethod"


def test_run_once_runs_immediately_once():
    task = Task.run_once(jobs.record, userdata={"k": 1})
    assert task.pk and task.iterations == 1 and not task.wait_for_schedule
    assert abs((task.next_run - timezone.now()).total_seconds()) < 5


def test_run_once_with_delay_until_fires_at_that_instant():
    when = timezone.now() + dt.timedelta(hours=2, microseconds=1234)
    task = Task.run_once(jobs.record, delay_until=when)
    assert task.next_run == when and task.start_running == when


@pytest.mark.parametrize(
    ("delay_until", "message"),
    [
        (timezone.now() - dt.timedelta(seconds=1), "Task cannot start running in the past"),
        ("2099-01-01T00:00:00Z", "delay_until must be a datetime.datetime instance"),
        (dt.date(2099, 1, 1), "delay_until must be a datetime.datetime instance"),
        (dt.datetime(2099, 1, 1), "delay_until must be an aware datetime"),
    ],
)
@pytest.mark.parametrize("constructor", ["run_once", "run_iterations"])
def test_delay_until_refused_with_sisy_messages(constructor, delay_until, message):
    with pytest.raises(ValueError, match=message):
        getattr(Task, constructor)(jobs.record, delay_until=delay_until)
    assert not Task.objects.exists()


def test_str_shows_pk_and_label():
    task = task_with_callable(jobs.record, label="Nightly cleanup")
    assert str(task) == "Task (unsaved): Nightly cleanup"
    task.save()
    assert str(task) == f"Task {task.pk}: Nightly cleanup"
    assert str(task_with_callable(jobs.record)) == "Task (unsaved): tests.testapp.jobs.record"


def test_run_iterations():
    task = Task.run_iterations(jobs.record, iterations=3, label="three", schedule="* * * * * */2")
    assert (task.iterations, task.schedule, task.wait_for_schedule) == (3, "* * * * * */2", True)
    assert task.next_run.second % 2 == 0
    now_task = Task.run_iterations(jobs.record, iterations=2, run_immediately=True)
    assert not now_task.wait_for_schedule
    with pytest.raises(ValueError, match="positive integer"):
        Task.run_iterations(jobs.record, iterations=0)


def test_status_properties_come_from_the_run_history():
    task = Task.run_once(jobs.record)
    assert not task.running and task.last_outcome is None
    now = timezone.now()
    TaskRun.objects.create(task=task, scheduled_for=now - dt.timedelta(seconds=2), status="failed")
    TaskRun.objects.create(task=task, scheduled_for=now, status="running", started_at=now)
    assert task.running and task.last_outcome == "failed"
    annotated = Task.objects.with_status().get(pk=task.pk)
    assert annotated.running and annotated.last_outcome == "failed"


def test_finished_property():
    task = Task.run_once(jobs.record)
    assert not task.finished
    task.finished_at = timezone.now()
    assert task.finished


# --- Labels are unique ----------------------------------------------------------------


def test_a_taken_label_is_refused_by_save_naming_the_task_that_has_it():
    first = task_with_callable(jobs.record, label="Nightly")
    first.save()
    second = task_with_callable(jobs.Things.class_job, label="Nightly")
    with pytest.raises(TaskDefinitionError) as info:
        second.save()
    assert info.value.message_dict["label"][0].startswith(
        f"a task labelled 'Nightly' already exists (id {first.pk})"
    )
    assert Task.objects.count() == 1 and taskinfo_with_label("Nightly") == first.funcinfo
    first.userdata = {"saved": "again"}
    first.save()  # its own label is no clash


def test_the_database_refuses_a_taken_label_from_any_writer():
    first = task_with_callable(jobs.record, label="one")
    first.save()
    second = task_with_callable(jobs.record, label="two")
    second.save()
    with pytest.raises(IntegrityError, match="sisy_task_label_unique"), transaction.atomic():
        Task.objects.filter(pk=second.pk).update(label="one")
    with pytest.raises(IntegrityError, match="sisy_task_label_unique"), transaction.atomic():
        # Django's own bulk_create (what a historical model in a migration has).
        models.QuerySet(Task).bulk_create([Task(label="one", callable_info=first.callable_info)])
    # sisy's checks it first, with a message.
    with pytest.raises(TaskDefinitionError, match="already exists"):
        Task.objects.bulk_create([Task(label="one", callable_info=first.callable_info)])


def test_run_once_again_numbers_its_default_label():
    """Sisy's run_once has no label: asking again for a one-off run must work."""
    labels = [Task.run_once(jobs.record).label for _ in range(3)]
    labels.append(Task.run_iterations(jobs.record, iterations=2).label)
    path = "tests.testapp.jobs.record"
    assert labels == [path, f"{path} (2)", f"{path} (3)", f"{path} (4)"]
    Task.objects.filter(label=f"{path} (2)").delete()
    assert Task.run_once(jobs.record).label == f"{path} (2)"
    with pytest.raises(TaskDefinitionError, match="already exists"):
        Task.run_iterations(jobs.record, label=path)


def test_run_once_works_inside_a_transaction():
    with transaction.atomic():
        Task.run_once(jobs.record)
        assert Task.run_once(jobs.record).label == "tests.testapp.jobs.record (2)"
        assert Task.objects.count() == 2


# --- Bad input (the whole matrix is in test_bad_input.py) -------------------------------


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_a_schedule_with_no_instant_is_a_value_error(expression):
    with pytest.raises(ValueError, match="has no instant"):
        task_with_callable(jobs.record, schedule=expression)


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 l 2 *", "0 0 31 2 mon"])
def test_rare_schedules_are_not_mistaken_for_impossible_ones(expression):
    task_with_callable(jobs.record, schedule=expression).save()


def test_end_running_in_the_past_is_judged_by_the_database_clock(monkeypatch):
    from sisy_pg.models import database_now

    db_now = database_now()
    # Python's clock a day ahead: the database's decides.
    monkeypatch.setattr(timezone, "now", lambda: db_now + dt.timedelta(days=1))
    task = task_with_callable(jobs.record)
    task.end_running = db_now + dt.timedelta(hours=1)
    task.save()
    late = task_with_callable(jobs.record, label="late")
    late.end_running = db_now - dt.timedelta(seconds=1)
    with pytest.raises(TaskDefinitionError, match="is in the past: the task would never run"):
        late.save()


def test_bulk_create_checks_every_task_and_creates_none_when_one_is_wrong():
    task_with_callable(jobs.record, label="taken").save()
    tasks = [
        task_with_callable(jobs.record, label="fine", schedule="* * * * * *"),
        task_with_callable(jobs.record, label="bad schedule"),
        task_with_callable(jobs.record, label="taken"),
        task_with_callable(jobs.record, label="twice"),
        task_with_callable(jobs.record, label="twice"),
    ]
    tasks[1].schedule = "61 * * * *"
    with pytest.raises(TaskDefinitionError) as info:
        Task.objects.bulk_create(tasks)
    problems = info.value.message_dict
    assert set(problems) == {"1.schedule", "2.label", "3.label", "4.label"}
    assert "already exists" in problems["2.label"][0]
    assert Task.objects.filter(label__in=["fine", "twice", "bad schedule"]).count() == 0


def test_bulk_create_plans_each_task_from_the_database_clock():
    tasks = [
        task_with_callable(jobs.record, label=f"bulk {n}", schedule="0 3 * * *") for n in range(50)
    ]
    tasks.append(task_with_callable(jobs.record, label="paused", schedule="0 3 * * *"))
    tasks[-1].enabled = False
    tasks.append(task_with_callable(jobs.record, label="no overlap", schedule="0 3 * * *"))
    tasks[-1].options = {"overlap": "skip"}
    created = Task.objects.bulk_create(tasks, batch_size=20)
    assert len(created) == 52 and all(task.pk for task in created)
    rows = {task.label: task for task in Task.objects.filter(label__in=[t.label for t in tasks])}
    assert len(rows) == 52
    next_runs = {rows[f"bulk {n}"].next_run for n in range(50)}
    (first,) = next_runs  # every one due at the next 03:00, planned at once
    assert first.astimezone(dt.timezone.utc) > timezone.now()
    assert rows["paused"].next_run is None
    assert rows["no overlap"].allow_overlap is False
