"""The admin's pages as a browser gets them: the form as rendered and submitted, and
sisy's templates rendering Django's own markup on each Django version (4.2, 5.2, 6.1)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.testapp import jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(admin_client):
    """A logged-in superuser (tests/conftest.py)."""
    return admin_client


class _Form(HTMLParser):
    """What a browser submits from the form ``form_id``, its submit buttons aside.

    A select submits its selected option, or its first when none is: the case
    a form without an initial value falls into.
    """

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside = form_id, False
        self.data: list[tuple[str, str]] = []
        self.selected: dict[str, list[str]] = {}
        self._select: str | None = None
        self._options: list[str] = []
        self._textarea: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside or "disabled" in a:
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select" and a.get("name"):
            self._select, self._options = a["name"], []
            self.selected[a["name"]] = []
        elif tag == "option" and self._select is not None:
            self._options.append(a.get("value", ""))
            if "selected" in a:
                self.selected[self._select].append(a.get("value", ""))
        elif tag == "textarea" and a.get("name"):
            self._textarea, self._text = a["name"], []

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select is not None:
            chosen = self.selected[self._select] or self._options[:1]
            self.data.extend((self._select, value) for value in chosen)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            # Browsers drop the newline that follows <textarea>.
            self.data.append((self._textarea, "".join(self._text).removeprefix("\n")))
            self._textarea = None


def rendered_form(html: str, form_id: str = "task_form") -> _Form:
    form = _Form(form_id)
    form.feed(html)
    return form


def submitted(form: _Form, **typed: str) -> dict[str, list[str]]:
    """The form's data as rendered, with the fields a person typed in, and Save pressed."""
    data: dict[str, list[str]] = {}
    for name, value in form.data:
        data.setdefault(name, []).append(value)
    data.update({name: [value] for name, value in typed.items()})
    data["_save"] = ["Save"]
    return data


# --- the time zone of the task form ------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "zone"),
    [({}, "Europe/Paris"), ({"SISY_DEFAULT_TIMEZONE": "Asia/Tokyo"}, "Asia/Tokyo")],
)
def test_the_add_form_offers_the_default_zone_and_saves_it_untouched(
    client, settings, overrides, zone
):
    """The zone a task gets when none is given (SISY_DEFAULT_TIMEZONE, else TIME_ZONE)."""
    for name, value in overrides.items():
        setattr(settings, name, value)
    html = client.get(reverse("admin:sisy_task_add")).content.decode()
    form = rendered_form(html)
    assert form.selected["timezone"] == [zone]
    assert f"Next 5 instants, in {zone}:" in html
    response = client.post(
        reverse("admin:sisy_task_add"),
        submitted(form, label="untouched zone", callable_path="tests.testapp.jobs.record"),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Task.objects.get(label="untouched zone").timezone == zone


def test_the_change_form_selects_the_tasks_own_zone(client):
    task = task_with_callable(jobs.record, label="in New York", schedule="0 9 * * *")
    task.timezone = "America/New_York"
    task.save()
    url = reverse("admin:sisy_task_change", args=[task.pk])
    html = client.get(url).content.decode()
    form = rendered_form(html)
    assert form.selected["timezone"] == ["America/New_York"]
    assert "Next 5 instants, in America/New_York:" in html
    response = client.post(url, submitted(form, schedule="0 10 * * *"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    task.refresh_from_db()
    assert (task.timezone, task.schedule) == ("America/New_York", "0 10 * * *")


# --- Django's own markup ----------------------------------------------------------------


class _Breadcrumbs(HTMLParser):
    """The breadcrumbs of a page: their markup without texts and links, and their words.

    The words leave out the separators (text before Django 6, CSS since).
    """

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.markup: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self.depth == 0 and tag == "nav" and a.get("aria-label") == "Breadcrumbs":
            self.depth = 1
        elif self.depth:
            self.depth += 1
            kept = " ".join(
                f'{k}="{v}"' for k, v in sorted(attrs) if k in ("class", "aria-current")
            )
            self.markup.append(f"<{tag} {kept}>")

    def handle_endtag(self, tag: str) -> None:
        if self.depth:
            self.depth -= 1
            if self.depth:
                self.markup.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)


def breadcrumbs(client: Client, url: str) -> tuple[list[str], str]:
    response = client.get(url)
    assert response.status_code == 200, url
    parser = _Breadcrumbs()
    parser.feed(response.content.decode())
    assert parser.markup, f"{url} has no <nav aria-label=Breadcrumbs>"
    return parser.markup, " ".join("".join(parser.text).replace("\u203a", " ").split())


def test_every_sisy_page_has_the_breadcrumbs_of_djangos_own_pages(client):
    """Each sisy page against Django's page of the same kind (auth's groups), on this Django."""
    task = task_with_callable(jobs.record, label="nightly report")
    task.save()
    run = TaskRun.objects.create(task=task, scheduled_for=task.next_run, status="failed")
    group = Group.objects.create(name="operators")
    pages = [
        ("changelist", "sisy_task", (), "auth_group", ()),
        ("add", "sisy_task", (), "auth_group", ()),
        ("change", "sisy_task", (task.pk,), "auth_group", (group.pk,)),
        ("history", "sisy_task", (task.pk,), "auth_group", (group.pk,)),
        ("delete", "sisy_task", (task.pk,), "auth_group", (group.pk,)),
        ("changelist", "sisy_taskrun", (), "auth_group", ()),
        ("change", "sisy_taskrun", (run.pk,), "auth_group", (group.pk,)),
    ]
    for page, ours, our_args, djangos, their_args in pages:
        url = reverse(f"admin:{ours}_{page}", args=our_args)
        markup, _ = breadcrumbs(client, url)
        expected, _ = breadcrumbs(client, reverse(f"admin:{djangos}_{page}", args=their_args))
        assert markup == expected, url


def test_a_runs_last_crumb_is_its_title(client):
    task = task_with_callable(jobs.record, label="nightly report")
    task.save()
    run = TaskRun.objects.create(task=task, scheduled_for=task.next_run, status="failed")
    _, text = breadcrumbs(client, reverse("admin:sisy_taskrun_change", args=[run.pk]))
    assert text.startswith("Home")
    assert text.endswith(f"Task runs Run {run.pk} of task {task.pk}: nightly report")
