"""Backfill: each past instant of a range runs once, however often it is asked (docs/backfill.md)."""

import datetime as dt

import pytest
from django.core.management import CommandError
from django.urls import reverse
from django.utils import timezone

from sisy_pg.backfill import BackfillError, backfill
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.integration.helpers import MINUTE, backfill_runs, past_minutes, run_planner, sisy, sql
from tests.testapp import jobs

UTC = dt.timezone.utc


# --- the database decides: asked twice, queued once; one at a time --------------------


@pytest.mark.django_db(transaction=True)
def test_a_backfill_asked_in_sql_is_computed_by_a_planner_and_runs_each_instant_once():
    task = task_with_callable(jobs.record, label="every minute", schedule="* * * * *")
    task.save()
    first, last = past_minutes(5)
    # The instant before last was missed (a row says so): the backfill runs it.
    sql(
        "INSERT INTO sisy_taskrun (task_id, scheduled_for, status, finished_at, error, details) "
        "VALUES (%s, %s, 'missed', now(), 'missed: workers stopped', '{\"reason\": \"missed\"}')",
        [task.pk, last - MINUTE],
    )

    def ask_and_plan():
        ((backfill_id, refusal),) = sql(
            "SELECT backfill_id, refusal FROM sisy_backfill_v1(%s, %s, %s)",
            [task.label, first, last],
        )
        assert refusal is None
        assert sql("SELECT expanded_at FROM sisy_backfill WHERE id = %s", [backfill_id]) == [
            (None,)
        ]
        run_planner("expand_backfills")
        return sql(
            "SELECT instants, queued, already, error FROM sisy_backfill WHERE id = %s",
            [backfill_id],
        )[0]

    assert ask_and_plan() == (5, 5, 0, "")
    runs = backfill_runs(task).order_by("scheduled_for")
    assert [r.scheduled_for for r in runs] == [first + n * MINUTE for n in range(5)]
    assert runs.get(scheduled_for=last - MINUTE).details["was"]["status"] == "missed"
    # One at a time, oldest first: only the first has a job.
    assert [r.job_id is not None for r in runs] == [True, False, False, False, False]
    assert ask_and_plan() == (5, 0, 5, "")
    assert backfill_runs(task).count() == 5
    # Its end gives the next one its job, however it ends.
    TaskRun.objects.filter(pk=runs[0].pk).update(status="skipped")
    assert [r.job_id is not None for r in backfill_runs(task).order_by("scheduled_for")] == [
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.mark.django_db
def test_the_command_refuses_a_paused_task_and_a_range_beyond_the_limit(settings):
    task = task_with_callable(jobs.record, label="minutely", schedule="* * * * *")
    task.save()
    settings.SISY_BACKFILL_LIMIT = 3
    with pytest.raises(CommandError, match="more than 3 instant"):
        sisy("backfill", "minutely", "--from", "10m")
    with pytest.raises(CommandError, match="more than 2 instant"):
        sisy("backfill", "minutely", "--from", "10m", "--limit", "2")
    with pytest.raises(CommandError, match="still to come"):
        sisy("backfill", "minutely", "--from", "2099-01-01T00:00:00Z")
    Task.objects.filter(pk=task.pk).update(enabled=False)
    with pytest.raises(CommandError, match="cannot be backfilled: it is paused"):
        sisy("backfill", "minutely", "--from", "2m")
    assert not TaskRun.objects.filter(task=task).exists()
    assert sql("SELECT count(*) FROM sisy_backfill") == [(0,)]


@pytest.mark.django_db(transaction=True)
def test_the_python_api_says_what_is_wrong_with_a_range_and_records_nothing():
    task = task_with_callable(jobs.record, label="minutely", schedule="* * * * *")
    task.save()
    now = timezone.now()
    refused = {
        "not after its end": (now - 2 * MINUTE, now - 3 * MINUTE, None),
        "still to come": (now + 60 * MINUTE, now + 120 * MINUTE, None),
        "at least 1": (now - 5 * MINUTE, now, 0),
    }
    for message, (start, end, limit) in refused.items():
        with pytest.raises(BackfillError, match=message):
            backfill(task.pk, start, end, limit=limit)
    assert sql("SELECT count(*) FROM sisy_backfill") == [(0,)]


@pytest.mark.django_db
def test_the_admin_action_asks_for_the_range_then_backfills(admin_client):
    task = task_with_callable(jobs.record, label="admin backfill", schedule="* * * * *")
    task.save()
    first, last = past_minutes(3)
    url = reverse("admin:sisy_task_changelist")
    selected = {"action": "backfill", "_selected_action": [task.pk]}
    page = admin_client.post(url, selected)
    assert page.status_code == 200 and b"Backfill" in page.content
    assert not backfill_runs(task).exists()
    form = {
        "start": first.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "end": last.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "apply": "Backfill",
    }
    with timezone.override(UTC):  # the form's times are in the admin's time zone
        done = admin_client.post(url, {**selected, **form}, follow=True)
    assert "3 run(s) queued" in done.content.decode()
    assert backfill_runs(task).count() == 3


# --- a real worker ------------------------------------------------------------------------
