"""The policies' Python and the schema's SQL agree: the options one accepts the other stores, priorities alike."""

import json
import math
import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from sisy_pg import policies
from sisy_pg.policies import Policy
from tests.helpers import INVALID_OPTIONS, VALID_OPTIONS


def _database_accepts(options):
    """Whether sisy_task_options_valid lets a task have these options."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO sisy_task (label, callable_info, options) "
                'VALUES (%s, \'{"func_path": "x.y"}\', %s::jsonb)',
                [f"options {uuid.uuid4()}", json.dumps(options)],
            )
            transaction.set_rollback(True)
    except IntegrityError as exc:
        if "sisy_task_options_valid" in str(exc):
            return False
        raise
    return True


@pytest.mark.django_db
def test_the_database_accepts_the_options_python_accepts():
    for key, value in [*VALID_OPTIONS, *INVALID_OPTIONS]:
        if isinstance(value, float) and not math.isfinite(value):
            continue  # not JSON
        python = policies.options_errors({key: value}) == []
        assert _database_accepts({key: value}) == python, (key, value)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options",
    [{}, {"priority": 100}, {"priority": -100}, {"priority": 7.0}, {"priority": None}],
    ids=repr,
)
def test_priority_is_the_same_in_python_and_sql(options):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT priority FROM sisy_policy_v1(%s::jsonb, true, interval '60 seconds')",
            [json.dumps(options)],
        )
        ((priority,),) = cursor.fetchall()
    assert priority == Policy.of(options, allow_overlap=True).priority
