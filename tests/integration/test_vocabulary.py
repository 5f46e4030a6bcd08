"""One vocabulary: what sisy_pg.vocabulary spells in Python, the SQL spells alike.

Run statuses, reasons, task states, refusals and policy defaults are words
that both sides write; these tests read the SQL's (its constraints, its
functions' answers, the literals of schema.sql) and compare.
"""

import datetime as dt
import itertools
import json
import re

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError

from sisy_pg import conf, policies, sql_files
from sisy_pg.vocabulary import (
    MISSED_POLICIES,
    OVERLAP_POLICIES,
    Action,
    NotStarted,
    Reason,
    Refusal,
    RunStatus,
    TaskState,
)

pytestmark = pytest.mark.django_db


def sql(query, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def constraint(name):
    ((definition,),) = sql(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s", [name]
    )
    return definition


def test_run_statuses_are_the_constraint_s():
    listed = re.findall(r"'(\w+)'::", constraint("sisy_taskrun_status_known"))
    assert listed == list(RunStatus.values)


@pytest.mark.parametrize(
    ("option", "values"), [("missed", MISSED_POLICIES), ("overlap", OVERLAP_POLICIES)]
)
def test_policy_names_are_the_constraint_s(option, values):
    definition = constraint("sisy_task_options_valid")
    clause = re.search(rf"'{option}'::text\) = ANY \(ARRAY\[(.*?)\]", definition).group(1)
    assert tuple(re.findall(r"'(\w+)'::", clause)) == values


def test_reasons_written_by_the_sql_are_the_vocabulary_s():
    schema = sql_files.read("schema.sql")
    code = "\n".join(line.split("--")[0] for line in schema.splitlines())
    written = set(re.findall(r"\"reason\": \"(\w+)\"", code))
    written |= set(re.findall(r"'reason', '(\w+)'", code))
    for case in re.findall(r"'reason', CASE(.*?)END", code, flags=re.S):
        written |= set(re.findall(r"(?:THEN|ELSE) '(\w+)'", case))
    # The planner's reasons (missed, coalesced, overlap, backlog) are written from Python,
    # by sisy_pg.policies with the Reason enum.
    assert written <= set(Reason.values)
    assert set(Reason.values) - written == {"missed", "coalesced", "backlog"}


def test_task_states_are_the_state_function_s():
    seen = set()
    for error, finished, enabled, next_run, running, last in itertools.product(
        ("", "broken"),
        (None, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)),
        (True, False),
        (None, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)),
        (True, False),
        (None, *RunStatus.values),
    ):
        ((state,),) = sql(
            "SELECT sisy_task_state_v1(%s, %s, %s, %s, %s, %s)",
            [error, finished, enabled, next_run, running, last],
        )
        seen.add(state)
    assert seen == set(TaskState.values)


def test_refusals_are_the_refusal_function_s():
    seen = set()
    for action, enabled, finished, error in itertools.product(
        Action.values,
        (True, False),
        (None, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)),
        ("", "x"),
    ):
        ((refusal,),) = sql(
            "SELECT sisy_refusal_v1(%s, %s, %s, %s)", [action, enabled, finished, error]
        )
        seen.add(refusal)
    assert seen - {None} == set(Refusal.values)


def test_an_action_the_vocabulary_does_not_know_is_refused_by_the_sql():
    with pytest.raises(DatabaseError, match="unknown action"), transaction.atomic():
        sql("SELECT sisy_refusal_v1('delete', true, NULL, '')")


@pytest.mark.parametrize(
    ("options", "allow_overlap"),
    [
        ({}, True),
        ({}, False),
        ({"overlap": "buffer_one"}, False),
        ({"missed": "all", "grace": 5, "timeout": 1.5, "retries": 3, "retry_delay": 2}, True),
        ({"priority": 7}, True),
        ({"missed": None, "grace": None, "retries": 2.0}, True),
        ({"jitter": 2.5, "queue": "heavy"}, True),
    ],
)
def test_policy_defaults_are_the_same_in_python_and_sql(options, allow_overlap):
    python = policies.Policy.of(options, allow_overlap)
    ((missed, overlap, grace, timeout, retries, retry_delay, priority, jitter, queue),) = sql(
        "SELECT * FROM sisy_policy_v1(%s::jsonb, %s, make_interval(secs => %s))",
        [json.dumps(options), allow_overlap, float(conf.settings.GRACE)],
    )
    assert (missed, overlap, grace, timeout, retries, retry_delay, priority, jitter, queue) == (
        python.missed,
        python.overlap,
        python.grace,
        python.timeout,
        python.retries,
        python.retry_delay,
        python.priority,
        python.jitter,
        python.queue,
    )


def test_what_starting_a_run_answers_is_a_run_status_or_a_not_started_word():
    ((source,),) = sql("SELECT prosrc FROM pg_proc WHERE proname = 'sisy_start_run_v1'")
    # Its answer is the first column: a literal, or a CASE of literals, cast ::varchar.
    answers = re.findall(r"((?:'\w+'|CASE [^;]*? END)::varchar)", source, re.S)
    answered = {word for answer in answers for word in re.findall(r"'(\w+)'", answer)}
    assert answered - set(RunStatus.values) == set(NotStarted.values)
