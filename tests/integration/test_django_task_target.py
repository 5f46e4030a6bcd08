"""A Django task (``@task``) as what a schedule runs: described, stored, refused at save.

The worker's side (enqueue, following the result) is in test_django_tasks_e2e.py.
"""

import math
import re

import pytest
from django.db import connection

from sisy_pg import callables
from sisy_pg.models import Task, TaskDefinitionError, task_with_callable
from tests.testapp import scheduled_tasks

PATH = "tests.testapp.scheduled_tasks.add"


pytestmark = pytest.mark.django_db


def test_task_with_callable_saves_a_schedule_whose_userdata_are_the_keyword_arguments():
    task = task_with_callable(scheduled_tasks.add, schedule="* * * * * *", userdata={"a": 1})
    task.save()
    task.refresh_from_db()
    assert task.callable_info["func_type"] == "django_task"
    assert task.userdata == {"a": 1}


@pytest.mark.parametrize(
    ("using", "message"),
    [
        ({"backend": "nowhere"}, "nowhere"),
        ({"priority": 1000}, "priority"),
        ({"colour": "red"}, "only the keys"),
        ("default", "only the keys"),
    ],
)
def test_a_stored_using_the_backend_refuses_is_refused_at_save(using, message):
    info = {**callables.describe(PATH), "using": using}
    task = Task(callable_info=info, schedule="* * * * *")
    with pytest.raises(TaskDefinitionError, match=message):
        task.save()


def test_sisy_s_parameters_need_not_be_given():
    task = task_with_callable(scheduled_tasks.record_instant, userdata={"name": "n"})
    task.save()


def test_raw_sql_writes_a_schedule_the_worker_s_rule_then_reads():
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO sisy_task (label, callable_info, schedule, timezone, userdata) "
            "VALUES ('raw', %s, '* * * * *', 'UTC', '{\"a\": 2}') RETURNING id",
            [f'{{"func_type": "django_task", "func_path": "{PATH}"}}'],
        )
        (task_id,) = cursor.fetchone()
    task = Task.objects.get(pk=task_id)
    assert task.definition_errors() == {}
    enqueue = callables.resolve(task.callable_info, userdata=task.userdata)
    assert enqueue.kwargs == {"a": 2}


def test_the_admin_form_takes_a_task_s_dotted_path(admin_client):
    response = admin_client.post(
        "/admin/sisy/task/add/",
        {
            "label": "from the admin",
            "callable_path": PATH,
            "schedule": "* * * * *",
            "timezone": "UTC",
            "enabled": "on",
            "iterations": "0",
            "wait_for_schedule": "on",
            "allow_overlap": "on",
            "userdata": '{"a": 1}',
            "options": "{}",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    task = Task.objects.get(label="from the admin")
    assert task.callable_info["func_type"] == "django_task"
    response = admin_client.post(
        "/admin/sisy/task/add/",
        {
            "label": "wrong kwargs",
            "callable_path": PATH,
            "schedule": "* * * * *",
            "timezone": "UTC",
            "iterations": "0",
            "userdata": '{"b": 1}',
            "options": "{}",
        },
    )
    assert response.status_code == 200
    assert "does not bind" in response.content.decode()


def _form_data(**fields):
    return {
        "schedule": "* * * * *",
        "timezone": "UTC",
        "enabled": "on",
        "iterations": "0",
        "wait_for_schedule": "on",
        "allow_overlap": "on",
        "userdata": '{"a": 1}',
        "options": "{}",
        # The change page's inline of runs (read-only).
        "runs-TOTAL_FORMS": "0",
        "runs-INITIAL_FORMS": "0",
        **fields,
    }


def test_the_admin_keeps_and_edits_a_schedule_s_task_options(admin_client):
    task = task_with_callable(
        scheduled_tasks.add.using(queue_name="mail"), label="mail", userdata={"a": 1}
    )
    task.save()
    page = admin_client.get(f"/admin/sisy/task/{task.pk}/change/").content.decode()
    assert "mail" in page and "Django task options" in page
    response = admin_client.post(
        f"/admin/sisy/task/{task.pk}/change/",
        _form_data(label="mail", callable_path=PATH, task_using='{"queue_name": "mail"}'),
    )
    assert response.status_code == 302, re.findall(
        r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.content.decode(), re.S
    )
    task.refresh_from_db()
    assert task.callable_info["using"] == {"queue_name": "mail"}
    response = admin_client.post(
        f"/admin/sisy/task/{task.pk}/change/",
        _form_data(label="mail", callable_path=PATH, task_using='{"priority": 1000}'),
    )
    assert response.status_code == 200
    assert "priority" in response.content.decode()
    task.refresh_from_db()
    assert task.callable_info["using"] == {"queue_name": "mail"}


def test_task_options_are_refused_for_a_plain_callable(admin_client):
    response = admin_client.post(
        "/admin/sisy/task/add/",
        _form_data(
            label="plain",
            callable_path="tests.testapp.jobs.record",
            userdata="{}",
            task_using='{"queue_name": "mail"}',
        ),
    )
    assert response.status_code == 200
    assert "Only a Django task" in response.content.decode()
    assert not Task.objects.filter(label="plain").exists()


@pytest.mark.parametrize(
    ("userdata", "message"),
    [
        ({}, "does not bind"),  # a is required
        ({"a": 1, "c": 2}, "does not bind"),
        ({"a": math.nan}, "finite"),
        ({"a": math.inf}, "finite"),
        ({"a": 1, 2: 3}, "JSON keys are strings"),
        ({"a": b"bytes"}, "bytes"),
        ({"a": "nul\x00"}, "NUL"),
        ({"a": (1, 2)}, "normalises"),
        ({"name": "x", "scheduled_for": "2026-01-01"}, "sisy passes"),
    ],
)
def test_userdata_that_are_not_the_task_s_keyword_arguments_are_refused(userdata, message):
    target = scheduled_tasks.record_instant if "name" in userdata else scheduled_tasks.add
    with pytest.raises(ValueError, match=message):
        task_with_callable(target, userdata=userdata)
    if not any(isinstance(key, int) for key in userdata):
        task = Task(callable_info=callables.describe(target), userdata=userdata)
        with pytest.raises(TaskDefinitionError) as caught:
            task.save()
        assert message.split()[0] in str(caught.value.message_dict)
