"""The functions for operators at psql: sisy_run_now_v1, sisy_pause_v1, sisy_resume_v1,
sisy_clear_error_v1 (sisy_act_v1 decides), and sisy_task_id_v1."""

import datetime as dt

import pytest
from django.db import transaction
from django.db.utils import DatabaseError

from sisy_pg.models import TaskRun, task_with_callable
from tests.integration.helpers import sql
from tests.testapp import jobs

pytestmark = pytest.mark.django_db


def one(query, params=None):
    return sql(query, params)[0][0]


def make_task(label, schedule="0 0 1 1 *"):
    task = task_with_callable(jobs.record, label=label, schedule=schedule)
    task.save()
    return task


def row(task):
    return sql(
        "SELECT enabled, next_run, next_run <= clock_timestamp() FROM sisy_task WHERE id = %s",
        [task.pk],
    )[0]


def act(function, task):
    """(done, refusal) of ``SELECT * FROM function(task)``."""
    rows = sql(f"SELECT done, refusal FROM {function}(%s)", [task])
    assert len(rows) == 1
    return rows[0]


def test_pause_disables_and_cancels_queued_runs_then_refuses():
    task = make_task("Ping")
    run = TaskRun.objects.create(
        task=task, scheduled_for=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    )
    assert sql("SELECT * FROM sisy_pause_v1('Ping')") == [(task.pk, "Ping", True, None)]
    assert row(task)[:2] == (False, None)
    run.refresh_from_db()
    assert run.status == "cancelled" and run.details["reason"] == "disabled"
    assert act("sisy_pause_v1", "Ping") == (False, "already_paused")


def test_resume_enables_for_replanning_and_mends_then_refuses():
    task = make_task("Ping")
    sql("SELECT sisy_pause_v1('Ping')")
    sql("UPDATE sisy_task SET error = 'was broken' WHERE id = %s", [task.pk])
    assert act("sisy_resume_v1", "Ping") == (True, None)
    enabled, next_run, _ = row(task)
    # Enabled, waiting for a planner (next_run NULL), and mended.
    assert enabled is True and next_run is None
    assert one("SELECT error FROM sisy_task WHERE id = %s", [task.pk]) == ""
    assert act("sisy_resume_v1", "Ping") == (False, "not_paused")


def test_run_now_sets_next_run_to_now_for_a_runnable_task_only():
    task = make_task("Yearly")
    assert act("sisy_run_now_v1", "Yearly") == (True, None)
    assert row(task)[2] is True
    sql("SELECT sisy_pause_v1('Yearly')")
    assert act("sisy_run_now_v1", "Yearly") == (False, "paused")
    assert row(task)[1] is None
    sql("SELECT sisy_resume_v1('Yearly')")
    sql("UPDATE sisy_task SET error = 'broken' WHERE id = %s", [task.pk])
    assert act("sisy_run_now_v1", "Yearly") == (False, "broken")
    assert row(task)[1] is None
    sql(
        "UPDATE sisy_task SET error = '', finished_at = now(), next_run = NULL WHERE id = %s",
        [task.pk],
    )
    assert act("sisy_run_now_v1", "Yearly") == (False, "finished")


def test_clear_error_mends_a_broken_task_for_replanning_then_refuses():
    task = make_task("Ping")
    sql("UPDATE sisy_task SET error = 'broken: gone', next_run = NULL WHERE id = %s", [task.pk])
    assert act("sisy_resume_v1", "Ping") == (False, "broken")
    assert act("sisy_clear_error_v1", "Ping") == (True, None)
    assert one("SELECT error FROM sisy_task WHERE id = %s", [task.pk]) == ""
    assert act("sisy_clear_error_v1", "Ping") == (False, "not_broken")


def test_a_task_is_named_by_its_label_first_then_by_its_id():
    first = make_task("Ping")
    # A task labelled with the other's id: the label wins.
    labelled_like_an_id = make_task(str(first.pk + 1000))
    assert one("SELECT sisy_task_id_v1(%s)", [str(first.pk)]) == first.pk
    assert one("SELECT sisy_task_id_v1(%s)", [labelled_like_an_id.label]) == labelled_like_an_id.pk
    assert one("SELECT sisy_task_id_v1('Ping')") == first.pk


@pytest.mark.parametrize(
    "function", ["sisy_pause_v1", "sisy_resume_v1", "sisy_run_now_v1", "sisy_clear_error_v1"]
)
def test_unknown_task_raises_no_data_found(function):
    make_task("Known")
    with pytest.raises(DatabaseError) as failure, transaction.atomic():
        sql(f"SELECT * FROM {function}('Unknown')")
    assert "sisy: no task labelled 'Unknown' (nor with that id)" in str(failure.value)
    assert failure.value.__cause__.sqlstate == "P0002"  # no_data_found


def test_an_unknown_action_is_an_error_not_a_no_op():
    task = make_task("Known")
    with pytest.raises(DatabaseError) as failure, transaction.atomic():
        sql("SELECT * FROM sisy_act_v1('delete', %s)", [[task.pk]])
    assert "sisy: unknown action delete" in str(failure.value)


@pytest.mark.parametrize(
    "function", ["sisy_pause_v1", "sisy_resume_v1", "sisy_run_now_v1", "sisy_clear_error_v1"]
)
def test_operator_functions_are_security_definers_with_a_pinned_search_path(function):
    config, definer = sql(
        "SELECT proconfig, prosecdef FROM pg_proc WHERE proname = %s", [function]
    )[0]
    assert definer is True
    assert any(setting.startswith("search_path=") for setting in config)


def test_live_workers_counts_fresh_heartbeats_only():
    sql("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 day'")
    assert one("SELECT sisy_live_workers_v1(interval '30 seconds')") == 0
    sql("SELECT procrastinate_register_worker_v1()")
    assert one("SELECT sisy_live_workers_v1(interval '30 seconds')") == 1
