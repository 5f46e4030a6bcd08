"""``manage.py sisy``: every subcommand against the test database (no worker needed)."""

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from sisy_pg.management.commands.sisy import describe, seconds_first_suggestion
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.integration.helpers import sql
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc


def sisy(*args):
    """Run ``manage.py sisy *args``; its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    call_command("sisy", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def sisy_json(*args):
    return json.loads(sisy(*args, "--json")[0])


def make_task(label, schedule="*/5 * * * *", **fields):
    task = task_with_callable(jobs.record, label=label, schedule=schedule)
    for name, value in fields.items():
        setattr(task, name, value)
    task.save()
    return task


def add_run(task, minutes_ago, status, **fields):
    scheduled = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=minutes_ago)
    return TaskRun.objects.create(
        task=task,
        scheduled_for=scheduled,
        status=status,
        started_at=scheduled + dt.timedelta(milliseconds=40),
        finished_at=scheduled + dt.timedelta(seconds=2),
        **fields,
    )


def break_task(task, reason="module 'gone' not found"):
    sql("UPDATE sisy_task SET error = %s, next_run = NULL WHERE id = %s", [reason, task.pk])


@pytest.fixture
def live_worker():
    """A worker that plans: a fresh procrastinate heartbeat and its sisy report."""
    sql(
        "SELECT sisy_worker_seen_v1(w.worker_id, 'host:1:worker', NULL, true, 4, 0, 0, 'ok', '{}')"
        " FROM procrastinate_register_worker_v1() AS w"
    )


@pytest.fixture
def no_live_worker():
    # Rows left by other tests' workers count as dead (rolled back after the test).
    sql("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 day'")
    sql("UPDATE sisy_worker SET seen_at = now() - interval '1 day'")


# --- list ----------------------------------------------------------------------------


def test_list_is_an_aligned_table_with_states_and_broken_reasons():
    ok = make_task("Nightly cleanup", "30 2 * * *", timezone="Europe/Paris")
    add_run(ok, 5, "succeeded")
    make_task("Paused one", enabled=False)
    broken = make_task("Broken one")
    break_task(broken)
    lines = sisy("list")[0].splitlines()
    header = lines[0]
    assert header.split("  ")[0] == "id"
    assert "next run (UTC)" in header and "last run (UTC)" in header
    assert "last outcome" in header
    column = header.index("state")
    rows = {line.split("  ")[1].strip(): line for line in lines[1:] if not line.startswith(" ")}
    assert rows["Nightly cleanup"][column:].startswith("scheduled")
    assert rows["Paused one"][column:].startswith("paused")
    assert rows["Broken one"][column:].startswith("broken")
    assert "succeeded" in rows["Nightly cleanup"]
    # To the second, in UTC.
    next_run = Task.objects.get(pk=ok.pk).next_run.astimezone(UTC)
    assert next_run.strftime("%Y-%m-%dT%H:%M:%SZ") in rows["Nightly cleanup"]
    reason = lines[lines.index(rows["Broken one"]) + 1]
    assert reason.strip() == "! broken: module 'gone' not found"


def test_list_json_and_empty():
    assert sisy("list")[0].strip() == "No sisy task defined."
    assert sisy_json("list") == []
    make_task("One")
    (task,) = sisy_json("list")
    assert task["label"] == "One" and task["state"] == "scheduled"
    assert task["next_run"].endswith("Z") and task["last_outcome"] is None


def test_sisy_status_prints_what_list_prints():
    make_task("One")
    out = io.StringIO()
    call_command("sisy_status", stdout=out)
    assert out.getvalue() == sisy("list")[0]


# --- show, next, history -----------------------------------------------------------


def test_show_gives_every_field_policy_instants_and_runs():
    task = make_task(
        "Report",
        "0 9 * * 1-5",
        timezone="Asia/Tokyo",
        options={"missed": "skip", "retries": 2},
        userdata={"to": "ops"},
    )
    add_run(task, 10, "failed", error="boom\nTraceback...", details={"attempt": 1})
    text = sisy("show", "Report")[0]
    for expected in (
        "label:",
        "state:",
        "failing",
        "Asia/Tokyo",
        "tests.testapp.jobs.record",
        "missed=skip",
        "retries=2",
        '{"to": "ops"}',
        "next instants of its schedule:",
        "last runs:",
        "boom",
        "09:00, Monday through Friday",
    ):
        assert expected in text, expected
    document = sisy_json("show", "Report")
    assert document["state"] == "failing"
    assert document["policy"]["missed"] == "skip" and document["policy"]["grace"] == 60
    assert len(document["next_instants"]) == 5
    assert all(
        i["local"].startswith(("20",)) and "T09:00:00+09:00" in i["local"]
        for i in document["next_instants"]
    )
    assert document["runs"][0]["error"] == "boom"


def test_next_lists_instants_in_the_zone_and_utc():
    make_task("Ping", "0 12 * * *", timezone="America/New_York")
    document = sisy_json("next", "Ping", "-n", "3")
    assert len(document["instants"]) == 3
    for instant in document["instants"]:
        local = dt.datetime.fromisoformat(instant["local"])
        utc = dt.datetime.fromisoformat(instant["utc"].replace("Z", "+00:00"))
        assert local == utc and local.hour == 12
    lines = sisy("next", "Ping")[0].splitlines()
    assert lines[0].split() == ["America/New_York", "UTC"]
    assert len(lines) == 6


def test_next_respects_iterations_left():
    make_task("Thrice", iterations=3, fire_count=2)
    assert len(sisy_json("next", "Thrice")["instants"]) == 1


def test_history_shows_reason_lag_duration_and_first_line_of_error():
    task = make_task("Job")
    add_run(task, 3, "succeeded")
    add_run(task, 2, "missed", error="missed: late\nmore", details={"reason": "late"})
    add_run(task, 1, "failed", error="ValueError: x\nTraceback")
    lines = sisy("history", "Job", "-n", "2")[0].splitlines()
    assert lines[0].split()[:4] == ["scheduled", "for", "(UTC)", "status"]
    assert len(lines) == 3
    assert "failed" in lines[1] and "ValueError: x" in lines[1] and "Traceback" not in lines[1]
    assert "missed" in lines[2] and "late" in lines[2]
    runs = sisy_json("history", "Job")["runs"]
    assert [r["status"] for r in runs] == ["failed", "missed", "succeeded"]
    assert runs[0]["lag"] == 0.04 and runs[0]["duration"] == 1.96
    assert runs[1]["reason"] == "late"


def test_history_names_the_task_result_a_django_task_s_run_follows():
    task = make_task("Enqueues")
    add_run(task, 2, "succeeded")
    add_run(task, 1, "running", details={"task_result_id": "4711", "task_backend": "default"})
    lines = sisy("history", "Enqueues")[0].splitlines()
    assert "task result" in lines[0]
    assert "4711" in lines[1] and lines[2].split()[-1] == "-"
    assert sisy_json("history", "Enqueues")["runs"][0]["task_result_id"] == "4711"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_result_id, task_backend FROM sisy_run_history WHERE task_id = %s "
            "ORDER BY scheduled_for",
            [task.pk],
        )
        assert cursor.fetchall() == [(None, None), ("4711", "default")]


def test_unknown_label_is_an_error():
    for action in ("show", "next", "run", "pause", "resume", "history"):
        with pytest.raises(CommandError, match="no task labelled 'nope'"):
            sisy(action, "nope")


# --- run, pause, resume -------------------------------------------------------------


def test_run_sets_next_run_to_now_or_says_why_not():
    task = make_task("Yearly", "0 0 1 1 *")
    out = sisy("run", "Yearly")[0]
    assert "runs now" in out
    assert sql("SELECT next_run <= clock_timestamp() FROM sisy_task WHERE id = %s", [task.pk]) == [
        (True,)
    ]
    Task.objects.filter(pk=task.pk).update(enabled=False)
    with pytest.raises(CommandError, match=r"cannot run: it is paused \(resume it first\)"):
        sisy("run", "Yearly")
    broken = make_task("Broken")
    break_task(broken)
    with pytest.raises(CommandError, match="broken"):
        sisy("run", "Broken")


def test_pause_and_resume():
    task = make_task("Ping")
    assert "paused" in sisy("pause", "Ping")[0]
    assert Task.objects.get(pk=task.pk).enabled is False
    assert Task.objects.get(pk=task.pk).next_run is None  # the trigger's doing
    with pytest.raises(CommandError, match="already paused"):
        sisy("pause", "Ping")
    assert "resumed" in sisy("resume", "Ping")[0]
    assert Task.objects.get(pk=task.pk).enabled is True
    with pytest.raises(CommandError, match="not paused"):
        sisy("resume", "Ping")
    sql("UPDATE sisy_task SET finished_at = now() WHERE id = %s", [task.pk])
    with pytest.raises(CommandError, match="finished"):
        sisy("pause", "Ping")


# --- check ------------------------------------------------------------------------------


def test_check_describes_and_lists_instants():
    out, err = sisy("check", "*/15 9-17 * * 1-5", "--tz", "Europe/Paris", "-n", "3")
    assert err == ""
    assert out.splitlines()[0].startswith("*/15 9-17 * * 1-5: Every 15 minutes")
    assert "Monday through Friday" in out
    assert len(out.strip().splitlines()) == 2 + 1 + 3
    document = sisy_json("check", "0 0 * * * */10", "--tz", "UTC")
    assert document["description"].startswith("Every 10 seconds")
    assert document["timezone"] == "UTC" and document["warning"] is None
    assert len(document["instants"]) == 5


def test_check_defaults_to_the_default_time_zone(settings):
    settings.SISY_DEFAULT_TIMEZONE = "Asia/Kolkata"
    assert sisy_json("check", "* * * * *")["timezone"] == "Asia/Kolkata"


@pytest.mark.parametrize(
    ("expression", "message"),
    [("* * *", "field"), ("99 * * * *", "not valid cron"), ("0 0 31 2 *", "no instant")],
)
def test_check_refuses_invalid_schedules(expression, message):
    with pytest.raises(CommandError, match=message):
        sisy("check", expression)


def test_check_refuses_unknown_time_zone():
    with pytest.raises(CommandError, match="unknown time zone"):
        sisy("check", "* * * * *", "--tz", "Mars/Olympus")


def test_check_warns_about_seconds_first_expressions():
    _, err = sisy("check", "0 */5 * * * *")
    assert "sisy's sixth field is seconds" in err
    assert "Did you mean '*/5 * * * * 0'" in err
    assert sisy_json("check", "0 */5 * * * *")["warning"].startswith("sisy's sixth field")
    assert seconds_first_suggestion("*/5 * * * * 0") is None
    assert seconds_first_suggestion("* * * * * *") is None
    assert seconds_first_suggestion("0 9 * * *") is None


def test_descriptions_read_the_sixth_field_as_seconds():
    assert describe("30 2 * * *") == "At 02:30"
    assert describe("* * * * * */20") == "Every 20 seconds"


# --- health ------------------------------------------------------------------------------


def test_health_ok(live_worker):
    make_task("Fine")
    out, _ = sisy("health")
    assert out.startswith("ok: ") and "live worker" in out
    assert sisy_json("health")["ok"] is True


def test_health_fails_without_a_live_worker(no_live_worker):
    with pytest.raises(CommandError, match=r"^unhealthy: no live worker") as failure:
        sisy("health")
    assert "\n" not in str(failure.value)


def test_health_fails_for_an_overdue_task(live_worker):
    task = make_task("Late")
    sql("UPDATE sisy_task SET next_run = now() - interval '5 minutes' WHERE id = %s", [task.pk])
    with pytest.raises(CommandError, match=r"1 task\(s\) overdue by more than 60 s: 'Late'"):
        sisy("health")
    sisy("health", "--max-overdue", "600")  # within a looser threshold


def test_health_fails_for_broken_tasks_naming_a_few(live_worker):
    for number in range(7):
        break_task(make_task(f"Broken {number}"))
    paused = make_task("Broken but paused", enabled=False)
    break_task(paused)
    with pytest.raises(CommandError) as failure:
        sisy("health")
    message = str(failure.value)
    assert "7 task(s) broken: 'Broken 0', 'Broken 1'" in message
    assert "and 2 more" in message and "paused" not in message
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("sisy", "health", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["ok"] is False and len(document["broken"]) == 7
    # A liveness probe leaves them out: restarting workers cannot mend a row.
    out, _ = sisy("health", "--ignore-broken")
    assert out.startswith("ok: 1 live worker(s), no task overdue, 7 broken (ignored)"), out


def test_subcommand_is_required():
    with pytest.raises(CommandError):
        call_command("sisy")


@pytest.mark.parametrize("subcommand", ["show", "next", "history"])
def test_a_task_is_named_by_its_id_where_a_label_is_taken(subcommand):
    """The Why's case: `sisy show 1` said "no task labelled '1'" though `sisy list` leads with ids."""
    task = make_task("Nightly")
    by_id, by_label = sisy_json(subcommand, str(task.pk)), sisy_json(subcommand, "Nightly")
    assert by_id == by_label and by_id["label"] == "Nightly"
    with pytest.raises(CommandError, match=r"no task labelled '999999' \(nor with that id\)"):
        sisy(subcommand, "999999")


def test_a_label_that_looks_like_an_id_wins_over_the_id():
    first = make_task("First")
    make_task(str(first.pk), schedule="*/7 * * * *")
    assert sisy_json("show", str(first.pk))["schedule"] == "*/7 * * * *"


def test_clear_error_mends_a_broken_task_and_says_why_not_otherwise():
    task = make_task("Broken")
    break_task(task)
    assert "error cleared" in sisy("clear-error", "Broken")[0]
    assert Task.objects.get(pk=task.pk).error == ""
    with pytest.raises(CommandError, match="it is not broken: it has no error to clear"):
        sisy("clear-error", "Broken")
