"""The admin: list, add with validation, actions (all through the real database)."""

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sisy_pg.admin import RECENT_RUNS
from sisy_pg.models import Task, TaskRun, database_now, task_with_callable
from tests.integration.helpers import change_data, form_data
from tests.testapp import jobs
from tests.testapp.models import Widget

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(admin_client):
    """A logged-in superuser (tests/conftest.py)."""
    return admin_client


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
    client.post(url, {"action": "pause", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert not task.enabled and task.next_run is None


def staff_client(django_user_model, *codenames):
    """A logged-in staff user (not a superuser) with only these permissions of sisy."""
    user = django_user_model.objects.create_user("staff", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="sisy", codename__in=codenames)
    )
    staff = Client()
    staff.force_login(user)
    return staff


@pytest.mark.parametrize("permissions", [("view_task",), ("view_task", "add_task")])
@pytest.mark.parametrize("action", ["run_now", "pause", "resume"])
def test_actions_need_the_change_permission(django_user_model, permissions, action):
    task = task_with_callable(jobs.record, schedule="0 0 1 1 *")
    task.save()
    Task.objects.filter(pk=task.pk).update(enabled=action == "pause")
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
    staff.post(url, {"action": "pause", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert not task.enabled
    staff.post(url, {"action": "resume", "_selected_action": [task.pk]})
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


# --- the task list ------------------------------------------------------------------------

CHANGELIST = "admin:sisy_task_changelist"
BROKEN_REASON = "'tests.testapp.jobs' has no attribute 'gone'"


def tasks_in_every_state():
    """One task per state, by label; their runs written as the workers write them."""
    tasks = {}
    for label in ("scheduled", "running", "failing", "paused", "broken", "finished"):
        task = task_with_callable(jobs.record, label=label, schedule="*/5 * * * *")
        task.timezone = "America/New_York"
        task.save()
        tasks[label] = task
    now = database_now()
    second = dt.timedelta(seconds=1)
    for label, status in [
        ("scheduled", "succeeded"),
        ("running", "running"),
        ("failing", "failed"),
        ("broken", "failed"),
    ]:
        TaskRun.objects.create(
            task=tasks[label],
            scheduled_for=now - 3 * second,
            started_at=now - second,
            status=status,
        )
    Task.objects.filter(label__in=["scheduled", "failing"]).update(last_run=now - 3 * second)
    Task.objects.filter(label="paused").update(enabled=False)
    Task.objects.filter(label="broken").update(error=BROKEN_REASON)
    Task.objects.filter(label="finished").update(finished_at=now)
    return tasks


def rows(response):
    """Row label -> the row's HTML, in the list's order."""
    html = response.content.decode()
    body = html.split('id="result_list"')[1].split("<tbody>")[1].split("</tbody>")[0]
    found = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return {re.search(r'field-label_display"><a [^>]*>([^<]*)', row).group(1): row for row in found}


def test_the_list_shows_state_schedule_in_words_times_to_the_second_and_outcomes(client):
    tasks_in_every_state()
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    listed = rows(response)
    assert list(listed) == ["broken", "failing", "finished", "paused", "running", "scheduled"]
    for state, row in listed.items():
        assert f'sisy-badge sisy-{state}">{state}</span>' in row, row
        assert '<code class="sisy-cron">*/5 * * * *</code>' in row
        assert "America/New_York" in row and "Every 5 minutes" in row
        assert "tests.testapp.jobs.record" in row  # the callable, under the label
    assert BROKEN_REASON.replace("'", "&#x27;") in listed["broken"]
    assert 'sisy-badge sisy-failed">failed</span>' in listed["failing"]
    assert 'sisy-badge sisy-succeeded">succeeded</span>' in listed["scheduled"]
    # Next and last run to the second, in the admin's time zone (Europe/Paris here).
    last_run = timezone.localtime(Task.objects.get(label="scheduled").last_run)
    assert f"{last_run:%Y-%m-%d}</span> {last_run:%H:%M:%S}</time>" in listed["scheduled"]
    assert "3 s ago" in listed["scheduled"]
    next_run = timezone.localtime(Task.objects.get(label="scheduled").next_run)
    assert f"{next_run:%H:%M:%S}</time>" in listed["scheduled"] and "in " in listed["scheduled"]
    assert "Times are in Europe/Paris, to the second" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "labels"),
    [
        ({"state": "scheduled"}, ["scheduled"]),
        ({"state": "running"}, ["running"]),
        ({"state": "failing"}, ["failing"]),
        ({"state": "paused"}, ["paused"]),
        ({"state": "broken"}, ["broken"]),
        ({"state": "finished"}, ["finished"]),
        ({"outcome": "failed"}, ["broken", "failing"]),
        ({"outcome": "succeeded"}, ["scheduled"]),
        ({"outcome": "none"}, ["finished", "paused", "running"]),
        ({"enabled__exact": "0"}, ["paused"]),
        ({"q": "runn"}, ["running"]),
        ({"q": "jobs.record"}, ["broken", "failing", "finished", "paused", "running", "scheduled"]),
        ({"q": "jobs.fail"}, []),
    ],
)
def test_the_list_filters_by_state_outcome_enabled_and_searches_label_and_callable(
    client, query, labels
):
    tasks_in_every_state()
    response = client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    assert [task.label for task in response.context["cl"].result_list] == labels


def test_each_row_has_buttons_that_come_back_to_the_list(client):
    tasks_in_every_state()
    response = client.get(reverse(CHANGELIST), {"state": "broken"})
    (row,) = rows(response).values()
    pk = Task.objects.get(label="broken").pk
    back = "next=%2Fadmin%2Fsisy%2Ftask%2F%3Fstate%3Dbroken"
    for action, label in [
        ("run_now", "Run now"),
        ("pause", "Pause"),
        ("clear_error", "Clear error"),
    ]:
        assert f'formaction="/admin/sisy/task/{pk}/do/{action}/?{back}"' in row
        assert f">{label}</button>" in row
    response = client.post(f"/admin/sisy/task/{pk}/do/clear_error/?{back}")
    assert response.status_code == 302 and response.url == "/admin/sisy/task/?state=broken"
    assert Task.objects.get(pk=pk).error == ""


# --- actions and buttons: what they did, and why not ----------------------------------------


def act(client, action, *labels, button=False):
    """Run ``action`` on the tasks labelled ``labels``; the messages it left."""
    pks = [Task.objects.get(label=label).pk for label in labels]
    if button:
        (pk,) = pks
        response = client.post(reverse("admin:sisy_task_do", args=[pk, action]), follow=True)
    else:
        response = client.post(
            reverse(CHANGELIST), {"action": action, "_selected_action": pks}, follow=True
        )
    assert response.status_code == 200
    return [str(message) for message in get_messages(response.wsgi_request)]


FINISHED = (
    "finished (its iterations are used up or its end_running has passed; "
    "change them to run it again)"
)


@pytest.mark.parametrize("button", [False, True], ids=["dropdown", "button"])
@pytest.mark.parametrize(
    ("action", "label", "message"),
    [
        ("run_now", "scheduled", "1 task(s) will run now."),
        ("run_now", "finished", f"1 task(s) not run, {FINISHED}: Task {{finished}}: finished"),
        (
            "run_now",
            "broken",
            (
                "1 task(s) not run, broken (mend its definition or clear its error first): "
                "Task {broken}: broken"
            ),
        ),
        (
            "run_now",
            "paused",
            "1 task(s) not run, paused (resume it first): Task {paused}: paused",
        ),
        ("pause", "scheduled", "1 task(s) paused: their waiting runs are cancelled."),
        ("pause", "paused", "1 task(s) not paused, already paused: Task {paused}: paused"),
        (
            "pause",
            "finished",
            f"1 task(s) not paused, {FINISHED}: Task {{finished}}: finished",
        ),
        ("resume", "paused", "1 task(s) resumed: a worker's planner plans their next run now."),
        ("resume", "scheduled", "1 task(s) not resumed, not paused: Task {scheduled}: scheduled"),
        (
            "resume",
            "finished",
            f"1 task(s) not resumed, {FINISHED}: Task {{finished}}: finished",
        ),
        (
            "clear_error",
            "broken",
            (
                "1 task(s) cleared of their error: a worker's planner plans them again (they "
                "break again at their next run if the cause remains)."
            ),
        ),
        (
            "clear_error",
            "scheduled",
            "1 task(s) not cleared, not broken: it has no error to clear: Task {scheduled}: scheduled",
        ),
    ],
)
def test_each_action_says_what_it_did_or_why_not(client, action, label, message, button):
    tasks = tasks_in_every_state()
    before = Task.objects.values().get(pk=tasks[label].pk)
    pks = {name: task.pk for name, task in tasks.items()}
    assert act(client, action, label, button=button) == [message.format(**pks)]
    after = Task.objects.values().get(pk=tasks[label].pk)
    changed = {key for key in before if before[key] != after[key]} - {"modified_at"}
    expected = {
        ("run_now", "scheduled"): {"next_run"},
        ("pause", "scheduled"): {"enabled", "next_run"},
        ("resume", "paused"): {"enabled"},
        ("clear_error", "broken"): {"error"},
    }.get((action, label), set())
    assert changed == expected
    if (action, label) == ("run_now", "scheduled"):
        assert after["next_run"] <= database_now()


def test_a_finished_run_once_task_stays_finished_when_resumed(client):
    task = Task.run_once(jobs.record)
    Task.objects.filter(pk=task.pk).update(fire_count=1, finished_at=database_now(), enabled=False)
    (message,) = act(client, "resume", task.label)
    assert (
        message.startswith("1 task(s) not resumed, finished")
        and "change them to run it again" in message
    )
    assert not Task.objects.get(pk=task.pk).enabled


def test_one_action_on_many_tasks_reports_each_group(client):
    tasks_in_every_state()
    messages = act(client, "run_now", "scheduled", "running", "failing", "paused", "finished")
    assert messages[0] == "3 task(s) will run now."
    assert sorted(m.split(",")[0] for m in messages[1:]) == [
        "1 task(s) not run",
        "1 task(s) not run",
    ]


def test_an_action_across_a_filtered_selection(client):
    tasks_in_every_state()
    response = client.post(
        reverse(CHANGELIST) + "?state=scheduled",
        {"action": "pause", "select_across": "1", "_selected_action": ["0"]},
        follow=True,
    )
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "1 task(s) paused: their waiting runs are cancelled."
    ]
    assert set(Task.objects.filter(enabled=False).values_list("label", flat=True)) == {
        "paused",
        "scheduled",
    }


def test_the_task_page_has_the_buttons_that_apply(client):
    tasks = tasks_in_every_state()
    offered = {}
    for label, task in tasks.items():
        html = client.get(reverse("admin:sisy_task_change", args=[task.pk])).content.decode()
        offered[label] = re.findall(r'class="sisy-tool">.*?title="[^"]*">([^<]*)</button>', html)
        if label == "broken":
            assert "This task is broken" in html and BROKEN_REASON.replace("'", "&#x27;") in html
    assert offered == {
        "scheduled": ["Run now", "Pause"],
        "running": ["Run now", "Pause"],
        "failing": ["Run now", "Pause"],
        "paused": ["Run now", "Resume"],
        "broken": ["Run now", "Pause", "Clear error"],
        "finished": ["Run now"],
    }


def test_a_button_comes_back_to_a_safe_page_only(client):
    task = task_with_callable(jobs.record, label="t")
    task.save()
    url = reverse("admin:sisy_task_do", args=[task.pk, "pause"])
    page = reverse("admin:sisy_task_change", args=[task.pk])
    assert client.post(f"{url}?next={page}").url == page
    assert client.post(f"{url}?next=https://elsewhere.example/").url == reverse(CHANGELIST)


def test_buttons_refuse_what_is_not_a_button_press(client):
    task = task_with_callable(jobs.record, label="t")
    task.save()
    assert client.get(reverse("admin:sisy_task_do", args=[task.pk, "pause"])).status_code == 405
    assert client.post(reverse("admin:sisy_task_do", args=[task.pk, "delete"])).status_code == 404
    messages = [
        str(m)
        for m in get_messages(
            client.post(reverse("admin:sisy_task_do", args=[0, "pause"]), follow=True).wsgi_request
        )
    ]
    assert messages == ["No task with id '0'."]
    assert Task.objects.get(pk=task.pk).enabled


@pytest.mark.parametrize("action", ["run_now", "pause", "resume", "clear_error"])
def test_buttons_need_the_change_permission(django_user_model, action):
    tasks = tasks_in_every_state()
    staff = staff_client(django_user_model, "view_task")
    task = tasks["broken"]
    before = Task.objects.values().get(pk=task.pk)
    page = staff.get(reverse("admin:sisy_task_change", args=[task.pk])).content.decode()
    assert "sisy-tool" not in page
    assert "sisy-button" not in staff.get(reverse(CHANGELIST)).content.decode()
    response = staff.post(reverse("admin:sisy_task_do", args=[task.pk, action]), follow=True)
    (message,) = [str(m) for m in get_messages(response.wsgi_request)]
    assert message.startswith("Not allowed: you may not change tasks, so Task ")
    assert Task.objects.values().get(pk=task.pk) == before


# --- the change form: the schedule's preview, the fields -----------------------------------

PREVIEW = "admin:sisy_task_preview"


def test_the_preview_describes_and_lists_the_next_instants_in_the_zone(client):
    response = client.get(
        reverse(PREVIEW), {"schedule": "30  2 * * 1-5", "timezone": "America/New_York"}
    )
    assert response.status_code == 200
    preview = response.json()
    assert preview["schedule"] == "30 2 * * 1-5"
    assert preview["description"] == "At 02:30, Monday through Friday"
    assert preview["warning"] is None and preview["errors"] == {}
    instants = [item["local"] for item in preview["instants"]]
    assert len(instants) == 5 and all(re.search(r" 02:30:00 E[SD]T$", i) for i in instants)
    assert not any(i.startswith(("Sat", "Sun")) for i in instants)
    assert all(item["utc"].endswith(" UTC") for item in preview["instants"])
    assert "At 02:30, Monday through Friday" in preview["html"]
    assert "Next 5 instants, in America/New_York" in preview["html"]


def test_the_preview_warns_of_a_seconds_first_schedule(client):
    preview = client.get(reverse(PREVIEW), {"schedule": "0 */5 * * * *", "timezone": "UTC"}).json()
    assert "sisy's sixth field is seconds" in preview["warning"]
    assert "Did you mean '*/5 * * * * 0'" in preview["warning"]
    assert "sisy-warning" in preview["html"] and len(preview["instants"]) == 5


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"schedule": "61 * * * *", "timezone": "UTC"}, "schedule", "is not valid cron"),
        ({"schedule": "* * *", "timezone": "UTC"}, "schedule", "has 3 field(s)"),
        ({"schedule": "0 0 31 2 *", "timezone": "UTC"}, "schedule", "has no instant"),
        ({"schedule": "\x00", "timezone": "UTC"}, "schedule", "expected 5"),
        ({"schedule": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"schedule": "* * * * *", "timezone": "../../etc/passwd"}, "timezone", "unknown time"),
        ({"schedule": "* * * * *", "timezone": "Europe"}, "timezone", "unknown time zone"),
        ({"schedule": "* * * * *", "timezone": "x" * 300}, "timezone", "unknown time zone"),
    ],
)
def test_the_preview_names_what_is_wrong(client, query, field, message):
    response = client.get(reverse(PREVIEW), query)
    assert response.status_code == 400
    preview = response.json()
    assert message in preview["errors"][field] and preview["instants"] == []
    assert "errorlist" in preview["html"]


def test_the_preview_is_for_staff_who_may_see_tasks(django_user_model):
    query = {"schedule": "* * * * *", "timezone": "UTC"}
    anonymous = Client()
    response = anonymous.get(reverse(PREVIEW), query)
    assert response.status_code == 302 and "/login/" in response.url
    user = django_user_model.objects.create_user("visitor")
    visitor = Client()
    visitor.force_login(user)
    assert "/login/" in visitor.get(reverse(PREVIEW), query).url
    assert staff_client(django_user_model).get(reverse(PREVIEW), query).status_code == 403


def test_the_change_form_previews_the_saved_schedule_and_lists_the_last_runs(client):
    task = task_with_callable(jobs.record, label="t", schedule="0 9 * * *")
    task.timezone = "Asia/Tokyo"
    task.userdata = {"b": [1, 2], "a": "x"}
    task.save()
    start = database_now().replace(microsecond=0) - dt.timedelta(days=1)
    for minute in range(RECENT_RUNS + 5):
        TaskRun.objects.create(
            task=task, scheduled_for=start + dt.timedelta(minutes=minute), status="succeeded"
        )
    response = client.get(reverse("admin:sisy_task_change", args=[task.pk]))
    html = response.content.decode()
    assert "At 09:00" in html and "Next 5 instants, in Asia/Tokyo" in html
    assert html.count(" 09:00:00 JST") == 5
    assert 'data-url="/admin/sisy/task/preview/"' in html
    # Userdata as indented JSON, keys sorted.
    assert "&quot;a&quot;: &quot;x&quot;,\n  &quot;b&quot;: [\n    1," in html
    # The time zone is a choice of IANA names.
    assert '<option value="Asia/Tokyo" selected>Asia/Tokyo</option>' in html
    assert '<option value="Europe/Paris">' in html
    # The last 20 runs, newest first, each linking to its page; then the whole list.
    runs = re.findall(r'<a href="/admin/sisy/taskrun/(\d+)/change/">Run \d+</a>', html)
    newest = task.runs.order_by("-scheduled_for")[:RECENT_RUNS]
    assert [int(pk) for pk in runs] == [run.pk for run in newest]
    assert f'?task__id__exact={task.pk}">All the runs of this task' in html


def test_the_add_form_has_no_state_nor_runs(client):
    html = client.get(reverse("admin:sisy_task_add")).content.decode()
    assert "sisy-schedule-preview" in html and "runs-TOTAL_FORMS" not in html
    assert ">State<" not in html


def test_a_change_is_saved_and_a_seconds_first_schedule_is_warned_of(client):
    task = task_with_callable(jobs.record, label="t")
    task.save()
    TaskRun.objects.create(task=task, scheduled_for=database_now(), status="succeeded")
    response = client.post(
        reverse("admin:sisy_task_change", args=[task.pk]),
        change_data(task, schedule="0 */5 * * * *", timezone="Europe/Paris"),
        follow=True,
    )
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("was changed successfully" in m for m in messages), messages
    assert any("Did you mean '*/5 * * * * 0'" in m for m in messages), messages
    task.refresh_from_db()
    assert task.schedule == "0 */5 * * * *" and task.timezone == "Europe/Paris"
    assert task.runs.count() == 1


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"userdata": "{not json"}, "userdata", "Enter a valid JSON"),
        ({"userdata": '{"a": "\\u0000"}'}, "userdata", "NUL character"),
        ({"options": '{"retries": "\\u0000"}'}, "options", "NUL character"),
        ({"options": '{"missed": "sometimes"}'}, "options", "must be one of"),
        ({"iterations": "-1"}, "iterations", "greater than or equal to 0"),
        ({"iterations": "99999999999"}, "iterations", "less than or equal to"),
        ({"label": "x" * 300}, "label", "at most 255 characters"),
        ({"label": "a\x00b"}, "label", "Null characters are not allowed"),
        ({"callable_path": "a\x00b"}, "callable_path", "Null characters are not allowed"),
        ({"schedule": ""}, "schedule", "This field is required"),
        ({"timezone": ""}, "timezone", "This field is required"),
        ({"start_running_0": "2030-13-01", "start_running_1": "00:00"}, "start_running", "valid"),
        (
            {
                "start_running_0": "2031-01-01",
                "start_running_1": "00:00",
                "end_running_0": "2030-01-01",
                "end_running_1": "00:00",
            },
            "end_running",
            "end_running is before start_running",
        ),
        ({"pk_override": "x" * 101}, "pk_override", "at most 100 characters"),
    ],
)
def test_bad_input_in_a_field_is_an_error_on_that_field(client, overrides, field, message):
    task = task_with_callable(jobs.record, label="t")
    task.save()
    before = Task.objects.values().get(pk=task.pk)
    for url, data in [
        (reverse("admin:sisy_task_add"), form_data(**overrides)),
        (reverse("admin:sisy_task_change", args=[task.pk]), change_data(task, **overrides)),
    ]:
        response = client.post(url, data)
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert message in " ".join(errors.get(field, [])), errors
    assert list(Task.objects.values()) == [before]


# --- runs -------------------------------------------------------------------------------------


def failed_run():
    task = task_with_callable(jobs.fail, label="export")
    task.save()
    now = database_now()
    return TaskRun.objects.create(
        task=task,
        scheduled_for=now - dt.timedelta(seconds=2),
        started_at=now - dt.timedelta(seconds=1.5),
        finished_at=now - dt.timedelta(seconds=0.25),
        status="failed",
        error="RuntimeError: boom",
        traceback='Traceback (most recent call last):\n  File "jobs.py", line 3, in fail\n'
        '    raise RuntimeError("boom")\nRuntimeError: boom',
        details={"attempt": 2},
    )


def test_a_run_page_is_titled_with_the_run_and_shows_its_traceback_as_written(client):
    run = failed_run()
    response = client.get(reverse("admin:sisy_taskrun_change", args=[run.pk]))
    html = response.content.decode()
    title = f"Run {run.pk} of task {run.task_id}: export"
    assert f"<title>{title} | Django site admin</title>" in html
    # Its last crumb too: tests/integration/test_admin_pages.py (the markup differs by Django version).
    assert f"<h1>{title}</h1>" in html
    assert (
        '<pre class="sisy-pre">Traceback (most recent call last):\n  File &quot;jobs.py&quot;, '
        "line 3, in fail\n    raise RuntimeError(&quot;boom&quot;)\nRuntimeError: boom</pre>"
    ) in html
    assert "0.500 s" in html and "1.250 s" in html  # lag, duration
    assert "attempt 2" in html
    assert "Save" not in html  # read-only


def test_the_run_list_has_lag_duration_and_filters(client):
    run = failed_run()
    other = task_with_callable(jobs.record, label="other")
    other.save()
    TaskRun.objects.create(task=other, scheduled_for=database_now(), status="queued")
    url = reverse("admin:sisy_taskrun_changelist")
    response = client.get(url)
    html = response.content.decode()
    assert '<td class="field-lag_display">0.500 s</td>' in html
    assert '<td class="field-duration_display">1.250 s</td>' in html
    assert 'sisy-badge sisy-failed">failed</span>' in html
    for query, expected in [
        ({"status__exact": "failed"}, [run.pk]),
        ({"task__id__exact": str(other.pk)}, [other.runs.get().pk]),
        (
            {
                "scheduled_for__gte": "2000-01-01 00:00+00:00",
                "scheduled_for__lt": "2000-01-02 00:00+00:00",
            },
            [],
        ),
    ]:
        result = client.get(url, query).context["cl"].result_list
        assert [r.pk for r in result] == expected, query
    filters = [spec.title for spec in response.context["cl"].filter_specs]
    assert filters == ["status", "scheduled for", "task"]


def test_runs_are_read_only(client):
    run = failed_run()
    assert client.get(reverse("admin:sisy_taskrun_add")).status_code == 403
    response = client.post(
        reverse("admin:sisy_taskrun_change", args=[run.pk]), {"status": "succeeded"}
    )
    assert response.status_code == 403
    assert TaskRun.objects.get(pk=run.pk).status == "failed"


def test_the_run_list_reads_an_index_range_and_lists_tasks_only_when_few(client, monkeypatch):
    from sisy_pg import admin as sisy_admin

    task = task_with_callable(jobs.record, label="t")
    task.save()
    task_with_callable(jobs.record, label="another").save()  # a filter needs two choices
    for second in range(3):
        TaskRun.objects.create(
            task=task, scheduled_for=timezone.now() + dt.timedelta(seconds=second)
        )
    url = reverse("admin:sisy_taskrun_changelist")
    response = client.get(url)
    assert response.status_code == 200
    changelist = response.context["cl"]
    assert set(changelist.queryset.query.order_by) == {"-id"}  # the primary key's index
    assert "task" in [getattr(f, "field_path", None) for f in changelist.filter_specs]
    monkeypatch.setattr(sisy_admin, "TASK_FILTER_MAX", 0)
    changelist = client.get(url).context["cl"]
    assert "task" not in [getattr(f, "field_path", None) for f in changelist.filter_specs]
