"""The operators' names at psql (sisy_pause('label') and friends), and the descriptions.

Each unversioned name calls the current version of its function with the same
arguments and result, so that what operators type outlives versions; every
sisy function and view explains itself in psql (``\\df+ sisy*``, ``\\dv+``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import transaction
from django.db.utils import DatabaseError
from psycopg import errors
from psycopg.conninfo import make_conninfo

from sisy_pg.models import Task, TaskRun
from tests.helpers import current_database_url
from tests.integration.helpers import as_role, recipe_roles, refused, saved_task, sql

pytestmark = pytest.mark.django_db

COOKBOOK = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
# The name, and the version it calls in this release.
NAMES = {
    "sisy_run_now": "sisy_run_now_v1",
    "sisy_pause": "sisy_pause_v2",
    "sisy_resume": "sisy_resume_v1",
    "sisy_clear_error": "sisy_clear_error_v1",
    "sisy_backfill": "sisy_backfill_v1",
    "sisy_health": "sisy_health_v1",
    "sisy_metrics": "sisy_metrics_v1",
}


def functions() -> dict[str, dict]:
    """Every sisy function of the schema, by name (each name has one signature)."""
    rows = sql(
        r"""SELECT p.proname, obj_description(p.oid, 'pg_proc'),
                   pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                   p.prosecdef, p.prosrc, coalesce(p.proargnames[1:p.pronargs], '{}')
              FROM pg_proc AS p
             WHERE p.pronamespace = current_schema()::regnamespace
               AND p.proname LIKE 'sisy\_%%'"""
    )
    found = {}
    for name, description, arguments, result, definer, body, argnames in rows:
        assert name not in found, f"{name} has two signatures"
        found[name] = {
            "description": description,
            "arguments": arguments,
            "result": result,
            "definer": definer,
            "body": body,
            "argnames": argnames,
        }
    return found


def unversioned(found: dict[str, dict]) -> list[str]:
    return sorted(name for name in found if not re.search(r"_v\d+$", name))


# --- descriptions ------------------------------------------------------------------------------


def test_every_sisy_function_and_view_has_a_description():
    found = functions()
    assert len(found) > 50
    assert [name for name, f in found.items() if not f["description"]] == []
    views = sql(
        r"""SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class AS c
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'v'
               AND c.relname LIKE 'sisy\_%%'"""
    )
    assert {name for name, _ in views} >= {"sisy_task_status", "sisy_run_history"}
    assert [name for name, description in views if not description] == []


def test_what_operators_call_says_its_arguments_and_result_and_the_rest_says_internal():
    """Each says "internal:", or is for operators and names each of its arguments and columns."""
    found = functions()
    names = unversioned(found)
    for name, function in found.items():
        description = function["description"]
        if description.startswith("internal:"):
            assert name not in names, f"{name}: an operators' name cannot be internal"
            continue
        if name not in names:
            # A version operators may call: it sends them to its name.
            stem = re.sub(r"_v\d+$", "", name)
            assert stem in names and f"Operators call {stem}," in description, name
        table = re.fullmatch(r"TABLE\((.*)\)", function["result"])
        result_columns = (
            [column.split()[0] for column in table.group(1).split(", ")] if table else []
        )
        for word in [*function["argnames"], *result_columns]:
            assert re.search(rf"\b{word}\b", description), f"{name}'s description omits {word}"


# --- forwarding --------------------------------------------------------------------------------


def test_each_name_calls_its_version_with_the_same_arguments_and_result():
    found = functions()
    assert unversioned(found) == sorted(NAMES)
    for name, version in NAMES.items():
        function, target = found[name], found[version]
        assert re.findall(r"\bsisy_\w+(?=\()", function["body"]) == [version], name
        passed = re.search(rf"{version}\((.*)\)", function["body"]).group(1)
        assert [arg.strip() for arg in passed.split(",")] == list(target["argnames"]), name
        assert function["arguments"] == target["arguments"], name
        assert function["result"] == target["result"], name
        # As the version it calls: a role granted the name needs no other right.
        assert function["definer"] is target["definer"] is True, name
        assert f"Calls {version}." in function["description"], name


def test_the_cookbook_shows_every_name():
    text = COOKBOOK.read_text()
    for name in NAMES:
        assert f"{name}(" in text, name


def status(task):
    """What sisy_task_status says of ``task``, but for what names it and when."""
    (row,) = sql(
        "SELECT enabled, state, error, next_run IS NULL, next_run <= clock_timestamp(),"
        " pause_note, paused_until, paused_by FROM sisy_task_status WHERE id = %s",
        [task.pk],
    )
    return row


def twins(setup: str) -> tuple[Task, Task]:
    """Two tasks in the same state, after ``setup`` (SQL on ``sisy_task AS t`` of both)."""
    pair = (
        saved_task(label=f"by name {uuid.uuid4().hex[:6]}"),
        saved_task(label=f"by version {uuid.uuid4().hex[:6]}"),
    )
    if setup:
        sql(f"UPDATE sisy_task AS t SET {setup} WHERE t.id IN (%s, %s)", [pair[0].pk, pair[1].pk])
    return pair


@pytest.mark.parametrize(
    ("name", "arguments", "setup"),
    [
        ("sisy_run_now", "", ""),
        ("sisy_run_now", "", "enabled = false"),
        ("sisy_pause", "", ""),
        ("sisy_pause", ", 'deploy (OPS-1)'", ""),
        ("sisy_pause", ", p_until => %(until)s", ""),
        ("sisy_pause", "", "enabled = false"),
        ("sisy_resume", "", "enabled = false"),
        ("sisy_resume", "", "enabled = false, error = 'module gone'"),
        ("sisy_resume", "", ""),
        ("sisy_clear_error", "", "error = 'module gone'"),
        ("sisy_clear_error", "", ""),
    ],
)
def test_an_action_by_its_name_does_what_its_version_does(name, arguments, setup):
    by_name, by_version = twins(setup)
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    calls = [(name, by_name), (NAMES[name], by_version)]
    for function, task in calls:
        (row,) = sql(
            f"SELECT * FROM {function}(%(task)s{arguments})", {"task": task.label, "until": until}
        )
        assert row[:2] == (task.pk, task.label)
    acted = [
        sql(
            f"SELECT done, refusal FROM {function}(%(task)s{arguments})",
            {"task": task.label, "until": until},
        )
        for function, task in calls
    ]
    # The first calls changed the two alike; the second calls answer alike.
    assert acted[0] == acted[1]
    assert status(by_name) == status(by_version)


def test_a_backfill_by_its_name_is_asked_as_by_its_version():
    by_name, by_version = twins("schedule = '0 * * * *'")
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
    answers = [
        sql(
            f"SELECT refusal FROM {function}(%s, %s, now(), 2)",
            [task.label, since],
        )
        for function, task in [("sisy_backfill", by_name), ("sisy_backfill_v1", by_version)]
    ]
    assert answers == [[(None,)], [(None,)]]
    asked = sql(
        "SELECT task_id = %s, range_from, max_instants, requested_by, expanded_at"
        " FROM sisy_backfill WHERE task_id IN (%s, %s) ORDER BY id",
        [by_name.pk, by_name.pk, by_version.pk],
    )
    assert [row[1:] for row in asked] == [(since, 2, asked[0][3], None)] * 2
    assert [row[0] for row in asked] == [True, False]
    sql("SELECT sisy_pause_v1(%s)", [by_name.label])
    assert sql("SELECT refusal FROM sisy_backfill(%s, %s, now())", [by_name.label, since]) == [
        ("paused",)
    ]


def test_health_and_metrics_by_their_names_are_their_versions():
    saved_task(label="Never planned")
    sql(
        "UPDATE sisy_task SET next_run = NULL, created_at = now() - interval '1 hour',"
        " modified_at = now() - interval '1 hour'"
    )
    task = saved_task(label="Ran")
    TaskRun.objects.create(
        task=task,
        scheduled_for=task.created_at,
        status="failed",
        started_at=task.created_at,
        finished_at=task.created_at,
        details={"reason": "failed"},
    )
    for arguments in ("", "interval '1 second', interval '1 second', interval '1 hour'"):
        checks = [
            sql(f"SELECT check_name, ok, subjects FROM {function}({arguments})")
            for function in ("sisy_health", "sisy_health_v1")
        ]
        assert checks[0] == checks[1]
        assert ("unplanned", False, ["Never planned"]) in checks[0]
    samples = [
        sql(
            f"SELECT metric, labels, le, value FROM {function}(interval '1 minute')"
            " WHERE metric <> 'oldest_overdue_seconds' ORDER BY metric, labels::text, le"
        )
        for function in ("sisy_metrics", "sisy_metrics_v1")
    ]
    assert samples[0] == samples[1]
    assert ("runs_total", {"status": "failed", "reason": "failed"}) in [
        (metric, json.loads(labels)) for metric, labels, _, _ in samples[0]
    ]


def test_an_unknown_task_is_an_error_by_name_too():
    with pytest.raises(DatabaseError) as failure, transaction.atomic():
        sql("SELECT * FROM sisy_pause('Unknown')")
    assert failure.value.__cause__.sqlstate == "P0002"  # no_data_found


# --- the roles of sql/roles.sql ----------------------------------------------------------------


@pytest.fixture(scope="module")
def logins(django_db_setup, django_db_blocker) -> Iterator[dict[str, str]]:
    """Members of the recipe's roles (recipe_roles), and of a role granted sisy_pause only."""
    with django_db_blocker.unblock():
        url = current_database_url()
    pauser = f"names_pauser_{uuid.uuid4().hex[:8]}"
    with recipe_roles(url) as urls, psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{pauser}" LOGIN')
        try:
            admin.execute(
                f'GRANT EXECUTE ON FUNCTION sisy_pause(text, text, timestamptz) TO "{pauser}"'
            )
            yield {**urls, "pauser": make_conninfo(url, user=pauser)}
        finally:
            admin.execute(f'DROP OWNED BY "{pauser}"')
            admin.execute(f'DROP ROLE "{pauser}"')


@pytest.mark.django_db(transaction=True)
def test_the_operator_acts_by_the_names(logins):
    task = saved_task(label="Nightly")
    url = logins["operator"]
    for function, arguments, enabled in [
        ("sisy_pause", ", 'disk full'", False),
        ("sisy_resume", "", True),
        ("sisy_run_now", "", True),
    ]:
        rows = as_role(url, f"SELECT * FROM {function}('Nightly'{arguments})")
        assert rows == [(task.pk, "Nightly", True, None)], function
        task.refresh_from_db()
        assert task.enabled is enabled, function
    Task.objects.filter(pk=task.pk).update(error="broken: gone")
    assert as_role(url, "SELECT done FROM sisy_clear_error('Nightly')") == [(True,)]
    assert as_role(
        url, "SELECT refusal FROM sisy_backfill('Nightly', now() - interval '1 day', now())"
    ) == [(None,)]
    # And reads health, as the monitor it is too.
    assert ("workers",) in as_role(url, "SELECT check_name FROM sisy_health()")


@pytest.mark.django_db(transaction=True)
def test_the_monitor_reads_health_and_metrics_by_name_and_acts_on_nothing(logins):
    saved_task(label="Watched")
    url = logins["monitor"]
    assert as_role(url, "SELECT value FROM sisy_metrics() WHERE metric = 'tasks'") == [(1.0,)]
    checks = as_role(url, "SELECT check_name FROM sisy_health()")
    assert checks is not None and ("workers",) in checks
    for function in ("sisy_pause", "sisy_resume", "sisy_run_now", "sisy_clear_error"):
        assert function in refused(url, f"SELECT * FROM {function}('Watched')")


@pytest.mark.django_db(transaction=True)
def test_a_grant_of_the_name_alone_is_enough(logins):
    """SECURITY DEFINER: a later release pointing sisy_pause at a new version keeps this grant."""
    task = saved_task(label="Granted by name")
    url = logins["pauser"]
    assert as_role(url, "SELECT done FROM sisy_pause('Granted by name')") == [(True,)]
    task.refresh_from_db()
    assert task.enabled is False
    with pytest.raises(errors.InsufficientPrivilege):
        as_role(url, "SELECT * FROM sisy_pause_v2('Granted by name')")
