"""Backfill: each past instant of a range runs once, however often it is asked (docs/backfill.md)."""

import asyncio
import datetime as dt
import io
import itertools
import zoneinfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from sisy_pg import procrastinate_seam, worker
from sisy_pg.backfill import BackfillError, instants_between, parse_when
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.conftest import wait_until
from tests.testapp import jobs
from tests.testapp.models import Hit

UTC = dt.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
MINUTE = dt.timedelta(minutes=1)


def utc(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def sisy(*args):
    out = io.StringIO()
    call_command("sisy", *args, stdout=out)
    return out.getvalue()


def sql(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def past_minutes(count):
    """The ``count`` whole minutes before the database's current one: (first, last)."""
    ((now,),) = sql("SELECT date_trunc('minute', clock_timestamp())")
    return now - count * MINUTE, now - MINUTE


def backfill_runs(task):
    return TaskRun.objects.filter(task=task, details__backfill=True)


# --- the instants: the planner's arithmetic, no database ----------------------------


def test_instants_of_a_range_both_ends_included_within_the_task_window():
    instants = instants_between(
        "*/15 * * * *", "UTC", utc("2026-03-01 10:00"), utc("2026-03-01 11:00"), limit=10
    )
    assert instants == [
        utc(f"2026-03-01 {t}") for t in ("10:00", "10:15", "10:30", "10:45", "11:00")
    ]
    windowed = instants_between(
        "*/15 * * * *",
        "UTC",
        utc("2026-03-01 10:00"),
        utc("2026-03-01 11:00"),
        limit=10,
        start_running=utc("2026-03-01 10:10"),
        end_running=utc("2026-03-01 10:40"),
    )
    assert windowed == [utc("2026-03-01 10:15"), utc("2026-03-01 10:30")]


def test_instants_follow_the_time_zone_across_daylight_saving():
    # 02:30 in Paris does not exist on 2026-03-29: the planner runs it at 03:00.
    instants = instants_between(
        "30 2 * * *", "Europe/Paris", utc("2026-03-27 00:00"), utc("2026-03-30 12:00"), limit=10
    )
    assert [i.astimezone(PARIS).strftime("%d %H:%M") for i in instants] == [
        "27 02:30",
        "28 02:30",
        "29 03:00",
        "30 02:30",
    ]


def test_a_range_of_more_instants_than_the_limit_is_refused():
    with pytest.raises(BackfillError, match="more than 4 instant"):
        instants_between(
            "* * * * *", "UTC", utc("2026-03-01 10:00"), utc("2026-03-01 10:04"), limit=4
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", utc("2026-03-01 12:00")),
        ("5m", utc("2026-03-01 11:55")),
        ("2h ago", utc("2026-03-01 10:00")),
        ("-1d12h", utc("2026-02-28 00:00")),
        ("2026-03-01 09:30", utc("2026-03-01 08:30")),  # Paris, without an offset
        ("2026-03-01T09:30:00Z", utc("2026-03-01 09:30")),
    ],
)
def test_when_an_operator_types_it(text, expected):
    assert parse_when(text, PARIS, utc("2026-03-01 12:00")) == expected


def test_when_that_is_no_instant_says_what_is():
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when("yesterday", UTC, utc("2026-03-01 12:00"))


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
        _run_planner("expand_backfills")
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


def _run_planner(method):
    async def go():
        planner = worker.make_planner(
            procrastinate_seam.WorkerOptions(queues=None, stalled_worker_timeout=30)
        )
        conn = await planner.store.connect()
        try:
            return await getattr(planner, method)(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


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


@pytest.mark.e2e
def test_five_past_minutes_asked_twice_run_once_each(start_worker):
    start_worker("w1", "--concurrency", "4")
    task = task_with_callable(jobs.record, label="backfilled", schedule="* * * * *")
    task.save()
    first, last = past_minutes(5)
    span = ("--from", first.isoformat(), "--to", last.isoformat())
    assert "5 of 5 instant(s)" in sisy("backfill", "backfilled", *span)
    assert "0 of 5 instant(s)" in sisy("backfill", "backfilled", *span)
    wait_until(lambda: backfill_runs(task).filter(status="succeeded").count() == 5, timeout=30)
    assert "5 had run or will run already" in sisy("backfill", "backfilled", *span)
    hits = Hit.objects.filter(task_id=task.pk, scheduled_for__lte=last)
    assert sorted(h.scheduled_for for h in hits) == [first + n * MINUTE for n in range(5)]
    # One at a time, oldest first: each started once the one before had ended.
    runs = list(backfill_runs(task).order_by("scheduled_for"))
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(runs))
