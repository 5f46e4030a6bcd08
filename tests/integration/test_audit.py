"""The audit of tasks: every writer's change recorded, by whom and through what, on real PostgreSQL."""

from __future__ import annotations

import io
import json
import re

import psycopg
import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models.signals import pre_migrate
from django.urls import reverse
from psycopg import errors

from sisy_pg import audit
from sisy_pg.models import Task, task_with_callable
from tests.helpers import current_database_url
from tests.integration.helpers import changes_of, form_data, run_planner
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def role() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_user")
        return str(cursor.fetchone()[0])


def test_every_writer_is_recorded_with_who_and_through_what(django_user_model):
    alice = django_user_model.objects.create_user("alice")
    task = task_with_callable(jobs.record, label="audited", schedule="* * * * *")
    task.save()
    # psql, or any session that does not name itself: its role and application_name.
    with psycopg.connect(
        current_database_url(), application_name="ops-console", autocommit=True
    ) as conn:
        conn.execute("UPDATE sisy_task SET schedule = '*/5 * * * *' WHERE id = %s", [task.pk])
    with audit.acting_as(alice, via="admin"):
        task.pause()
    call_command("sisy", "--as", "alice", "resume", "audited", stdout=io.StringIO())
    call_command("sisy", "run", "audited", stdout=io.StringIO())
    call_command("sisy", "pause", "audited", stdout=io.StringIO())
    with pytest.raises(CommandError, match="no Django user"):
        call_command("sisy", "--as", "nobody", "pause", "audited")
    # Within a longer transaction, the writer named ends with the block.
    with transaction.atomic():
        with audit.acting_as("bob", via="import-script"):
            Task.objects.filter(pk=task.pk).update(userdata={"n": 1})
        Task.objects.filter(pk=task.pk).update(userdata={"n": 2})

    me = role()
    recorded = changes_of(task.pk)
    assert [(op, actor, via) for op, actor, via, _ in recorded] == [
        ("insert", me, "api"),
        ("update", f"{me} (ops-console)", "sql"),
        ("update", "alice", "admin"),
        ("update", "alice", "cli"),
        ("update", me, "cli"),
        ("update", me, "cli"),
        ("update", "bob", "import-script"),
        ("update", me, "api"),
    ]
    created, by_sql, paused, resumed, ran, paused_again, *_ = (c for *_, c in recorded)
    assert created["schedule"] == {"old": None, "new": "* * * * *"}
    assert created["callable_info"]["new"]["func_path"] == "tests.testapp.jobs.record"
    # Only what the writer changed: not the next_run the trigger cleared, nor modified_at.
    assert by_sql == {"schedule": {"old": "* * * * *", "new": "*/5 * * * *"}}
    assert paused == {"enabled": {"old": True, "new": False}}
    assert resumed == {"enabled": {"old": False, "new": True}}
    assert list(ran) == ["next_run"] and ran["next_run"]["new"] is not None
    assert paused_again == paused

    # sisy show lists them, newest first.
    out = io.StringIO()
    call_command("sisy", "show", "audited", stdout=out)
    shown = out.getvalue().split("last changes:")[1]
    assert re.search(r"  alice +cli +enabled false -> true\n", shown)
    assert re.search(rf"  {me} +cli +enabled true -> false\n", shown)
    assert re.search(rf'{me} \(ops-console\) +sql +schedule "\* \* \* \* \*" -> "\*/5', shown)
    assert shown.index("import-script") < shown.index("ops-console")
    out = io.StringIO()
    call_command("sisy", "show", "audited", "--json", stdout=out)
    assert json.loads(out.getvalue())["changes"][0]["actor"] == me

    # A deleted task's changes stay, the last one with its definition.
    Task.objects.filter(pk=task.pk).delete()
    operation, _, via, gone = changes_of(task.pk)[-1]
    assert (operation, via, gone["label"]["old"], gone["schedule"]["new"]) == (
        "delete",
        "api",
        "audited",
        None,
    )


def test_the_admin_records_its_forms_buttons_and_actions_as_its_user(admin_client):
    response = admin_client.post(reverse("admin:sisy_task_add"), form_data(label="from the admin"))
    assert response.status_code == 302, response.content
    task = Task.objects.get(label="from the admin")
    admin_client.post(reverse("admin:sisy_task_do", args=[task.pk, "pause"]))
    admin_client.post(
        reverse("admin:sisy_task_changelist"), {"action": "resume", "_selected_action": [task.pk]}
    )
    assert [(op, actor, via) for op, actor, via, _ in changes_of(task.pk)] == [
        ("insert", "admin", "admin"),
        ("update", "admin", "admin"),
        ("update", "admin", "admin"),
    ]
    page = admin_client.get(reverse("admin:sisy_task_change", args=[task.pk])).content.decode()
    assert "sisy_task_changes" in page and "enabled false -&gt; true" in page


def test_migrate_is_recorded_as_migration_and_the_table_only_grows(django_user_model):
    task = task_with_callable(jobs.record, label="migrated")
    task.save()

    def a_data_migration(**kwargs):  # runs between sisy's pre_migrate and the migrations
        Task.objects.filter(pk=task.pk).update(iterations=3)

    testapp = apps.get_app_config("testapp")
    pre_migrate.connect(a_data_migration, sender=testapp, dispatch_uid="test_audit")
    try:
        call_command("migrate", verbosity=0)
    finally:
        pre_migrate.disconnect(dispatch_uid="test_audit", sender=testapp)
    Task.objects.filter(pk=task.pk).update(iterations=4)  # after migrate: the application again
    assert [via for _, _, via, _ in changes_of(task.pk)] == ["api", "migration", "api"]

    with psycopg.connect(current_database_url(), autocommit=True) as conn:
        for statement in (
            "UPDATE sisy_task_change SET actor = 'nobody'",
            "DELETE FROM sisy_task_change",
            "TRUNCATE sisy_task_change",
        ):
            with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
        # Older than the history's retention (14 days by default): pruned with it.
        conn.execute(
            "INSERT INTO sisy_task_change"
            " (task_id, operation, changed_at, actor, via, db_role, application_name, changes)"
            " VALUES (%s, 'update', now() - interval '15 days', 'old', 'sql', 'x', '', '{}')",
            [task.pk],
        )
    assert len(changes_of(task.pk)) == 4
    run_planner("housekeeping", True)
    assert [via for _, _, via, _ in changes_of(task.pk)] == ["api", "migration", "api"]


def test_a_pause_s_note_and_end_are_recorded_as_changes_of_the_task(django_user_model):
    import datetime as dt

    task = task_with_callable(jobs.record, label="paused with a note", schedule="* * * * *")
    task.save()
    with audit.acting_as(django_user_model(username="ops"), via="cli"):
        task.pause(note="first", until=dt.timedelta(hours=1))
    task.pause(note="second", until=dt.timedelta(hours=5))
    recorded = changes_of(task.pk)
    first, second = [change for change in recorded if "pause_note" in change[3]]
    assert first[1:3] == ("ops", "cli")
    assert first[3]["pause_note"] == {"old": None, "new": "first"}
    assert second[2] == "api" and second[3]["pause_note"] == {"old": "first", "new": "second"}
    assert second[3]["paused_until"]["old"] == first[3]["paused_until"]["new"]
    assert any(change[3].get("enabled") == {"old": True, "new": False} for change in recorded)
