"""Pause with a note and an end: SQL, the Python API, the admin, the CLI, and a real worker.

The note and the end are kept beside the task (sisy_task_pause) and shown
wherever its state is; a worker's planner resumes the task at its end, on the
database's clock (docs/pausing.md).
"""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from sisy_pg.models import ActionRefused, Task
from tests.integration.helpers import pause_of, saved_task, sisy, sql


@pytest.mark.django_db
def test_a_pause_keeps_its_note_and_end_until_it_ends_or_the_task_resumes():
    task, other, finished = (
        saved_task(label="Nightly"),
        saved_task(label="Other"),
        saved_task(label="Done"),
    )
    Task.objects.filter(pk=finished.pk).update(enabled=False, finished_at=timezone.now())
    # psql: sisy_pause_v2; the view shows the note, the end and who paused.
    ((done, refusal),) = sql(
        "SELECT done, refusal FROM sisy_pause_v2('Nightly', 'deploy freeze', now() + '1 hour')"
    )
    assert (done, refusal) == (True, None)
    ((state, note, ahead, by, role),) = sql(
        "SELECT state, pause_note, paused_until - now(), paused_by, session_user"
        " FROM sisy_task_status WHERE id = %s",
        [task.pk],
    )
    assert (state, note) == ("paused", "deploy freeze")
    assert dt.timedelta(minutes=59) < ahead <= dt.timedelta(hours=1) and by.startswith(role)
    # Python: the same, read from the annotation or the row.
    assert pause_of(task).note == "deploy freeze" and pause_of(task).until is not None
    task.refresh_from_db()
    assert not task.enabled and task.pause_info.note == "deploy freeze"
    # A paused task is given a new note and end; a plain pause is refused as before.
    task.pause(note="until the migration is done")
    assert (pause_of(task).note, pause_of(task).until) == ("until the migration is done", None)
    with pytest.raises(ActionRefused, match="already paused"):
        task.pause()
    with pytest.raises(ValueError, match="a pause must end in the future"):
        task.pause(until=timezone.now() - dt.timedelta(minutes=1))
    with pytest.raises(ActionRefused, match="finished"):
        finished.pause(note="x")
    assert (
        Task.objects.filter(pk__in=[other.pk, finished.pk]).pause(until=dt.timedelta(hours=2)) == 1
    )
    assert pause_of(other).until > timezone.now() + dt.timedelta(minutes=119)
    assert "(the task is paused until " in sisy("next", "Other")
    # Resuming (any writer) and deleting forget the pause.
    task.resume()
    assert task.pause_info is None
    other.delete()
    assert sql("SELECT count(*) FROM sisy_task_pause") == [(0,)]
    # The planners' end of pauses: due ones resume; one of an enabled task just goes.
    task.pause(note="short", until=dt.timedelta(hours=1))
    sql("UPDATE sisy_task_pause SET until = now() - interval '1 second'")
    sql("INSERT INTO sisy_task_pause (task_id, until) VALUES (%s, now())", [finished.pk])
    Task.objects.filter(pk=finished.pk).update(enabled=True, finished_at=None)
    ended = sql("SELECT task_id, resumed, refusal FROM sisy_end_pauses_v1(10) ORDER BY 1")
    assert ended == [(task.pk, True, None)]
    task.refresh_from_db()
    assert task.enabled and task.next_run is None  # for the planner to plan
    assert sql("SELECT count(*) FROM sisy_task_pause") == [(0,)]


@pytest.mark.django_db
def test_the_admin_pauses_with_a_note_and_an_end(admin_client):
    task, other = saved_task(label="Nightly"), saved_task(label="Other")
    changelist = reverse("admin:sisy_task_changelist")
    selected = {"action": "pause_with_note", "_selected_action": [task.pk, other.pk]}
    page = admin_client.post(changelist, selected)
    assert page.status_code == 200 and "Pause 2 tasks" in page.content.decode()
    until = timezone.localtime() + dt.timedelta(hours=3)
    response = admin_client.post(
        changelist,
        {**selected, "apply": "Pause", "note": "disk full", "until": f"{until:%Y-%m-%dT%H:%M:%S}"},
    )
    assert response.status_code == 302
    pause = pause_of(task)
    assert (pause.note, pause.paused_by) == ("disk full", "admin")
    assert pause.until == until.replace(microsecond=0)
    listed = admin_client.get(changelist).content.decode()
    assert listed.count(">disk full<") == 2 and "until " in listed
    # The task's page tells it, and links its pause page, which changes the note.
    html = admin_client.get(reverse("admin:sisy_task_change", args=[task.pk])).content.decode()
    pause_url = reverse("admin:sisy_task_pause", args=[task.pk])
    assert "disk full" in html and "paused " in html and pause_url in html
    assert "disk full" in admin_client.get(pause_url).content.decode()
    refused = admin_client.post(pause_url, {"note": "x", "until": "2000-01-01T00:00:00"})
    assert refused.status_code == 200 and "a pause ends in the future" in refused.content.decode()
    assert admin_client.post(pause_url, {"note": "disk replaced soon"}).status_code == 302
    assert (pause_of(task).note, pause_of(task).until) == ("disk replaced soon", None)
