"""The admin: list, add with validation, actions (all through the real database)."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.testapp import jobs
from tests.testapp.models import Widget

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(admin_client):
    return admin_client


def form_data(**overrides):
    data = {
        "label": "",
        "callable_path": "tests.testapp.jobs.record",
        "pk_override": "",
        "userdata": "{}",
        "options": "{}",
        "schedule": "* * * * *",
        "timezone": "UTC",
        "enabled": "on",
        "iterations": "0",
        "wait_for_schedule": "on",
        "allow_overlap": "on",
        "start_running_0": "",
        "start_running_1": "",
        "end_running_0": "",
        "end_running_1": "",
    }
    data.update(overrides)
    return data


def test_changelist_and_change_page_render(client):
    task = task_with_callable(jobs.record, label="listed")
    task.save()
    TaskRun.objects.create(task=task, scheduled_for=task.next_run, status="failed")
    response = client.get(reverse("admin:sisy_task_changelist"))
    assert response.status_code == 200 and b"listed" in response.content
    assert b"failed" in response.content
    response = client.get(reverse("admin:sisy_task_change", args=[task.pk]))
    assert response.status_code == 200 and b"tests.testapp.jobs.record" in response.content
    assert client.get(reverse("admin:sisy_taskrun_changelist")).status_code == 200


def test_add_a_task_for_a_model_instance_method(client):
    widget = Widget.objects.create()
    response = client.post(
        reverse("admin:sisy_task_add"),
        form_data(
            callable_path="tests.testapp.models.Widget.touch",
            pk_override=str(widget.pk),
            schedule="*/10 * * * * *",
        ),
    )
    assert response.status_code == 302, response.content
    task = Task.objects.get()
    assert task.callable_info["model_pk"] == widget.pk
    assert task.label == "tests.testapp.models.Widget.touch" and task.next_run is not None


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"schedule": "61 * * * *"}, "schedule", "is not valid cron"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"callable_path": "tests.testapp.jobs.nope"}, "callable_path", "has no attribute"),
        (
            {"callable_path": "tests.testapp.jobs.two_params"},
            "callable_path",
            "exactly one parameter",
        ),
        ({"callable_path": "tests.testapp.models.Widget.touch"}, "callable_path", "pk_override"),
        ({"userdata": "[1, 2]"}, "userdata", "userdata must be a dict"),
    ],
)
def test_add_form_names_the_problem_and_saves_nothing(client, overrides, field, message):
    response = client.post(reverse("admin:sisy_task_add"), form_data(**overrides))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors.get(field, [])), errors
    assert not Task.objects.exists()


def test_actions_run_now_and_disable(client):
    task = task_with_callable(jobs.record, schedule="0 0 1 1 *")
    task.save()
    url = reverse("admin:sisy_task_changelist")
    client.post(url, {"action": "run_now", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.next_run <= timezone.now()
    client.post(url, {"action": "disable", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert not task.enabled and task.next_run is None


def staff_client(django_user_model, *codenames):
    """A logged-in staff user (not a superuser) with only these permissions of sisy."""
    user = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="sisy", codename__in=codenames)
    )
    staff = Client()
    staff.force_login(user)
    return staff


@pytest.mark.parametrize("permissions", [("view_task",), ("view_task", "add_task")])
@pytest.mark.parametrize("action", ["run_now", "enable", "disable"])
def test_actions_need_the_change_permission(django_user_model, permissions, action):
    task = task_with_callable(jobs.record, schedule="0 0 1 1 *")
    task.save()
    Task.objects.filter(pk=task.pk).update(enabled=action == "disable")
    before = Task.objects.values("enabled", "next_run").get(pk=task.pk)
    staff = staff_client(django_user_model, *permissions)
    url = reverse("admin:sisy_task_changelist")
    page = staff.get(url)
    assert page.status_code == 200
    action_form = page.context["action_form"]  # None when no action is left
    offered = [name for name, _ in action_form.fields["action"].choices] if action_form else []
    assert action not in offered
    response = staff.post(url, {"action": action, "_selected_action": [task.pk]})
    assert response.status_code in (200, 302)
    assert Task.objects.values("enabled", "next_run").get(pk=task.pk) == before


def test_a_staff_user_with_the_change_permission_may_run_the_actions(django_user_model):
    task = task_with_callable(jobs.record, schedule="0 0 1 1 *")
    task.save()
    staff = staff_client(django_user_model, "view_task", "change_task")
    url = reverse("admin:sisy_task_changelist")
    staff.post(url, {"action": "disable", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert not task.enabled
    staff.post(url, {"action": "enable", "_selected_action": [task.pk]})
    staff.post(url, {"action": "run_now", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.enabled and task.next_run <= timezone.now()


def test_the_add_form_imports_nothing_outside_the_allowlist(client, monkeypatch, tmp_path):
    marker = tmp_path / "imported"
    monkeypatch.setenv("SISY_FORBIDDEN_IMPORT_MARKER", str(marker))
    response = client.post(
        reverse("admin:sisy_task_add"), form_data(callable_path="tests.forbidden_jobs.job")
    )
    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors["callable_path"]
    assert (
        error.startswith("refused: 'tests.forbidden_jobs.job'")
        and "SISY_ALLOWED_CALLABLES" in error
    )
    assert not marker.exists() and not Task.objects.exists()
