"""Bad input, at every layer a task can be written from: a clear error naming the field.

One table of bad inputs, each tried through the three layers:

- the Python API (``task_with_callable`` and ``Task.save()``): a ``ValueError``
  (``TaskDefinitionError`` from ``save()``, per field) -- never a raw library
  exception (``CroniterBadDateError``, ``TypeError``, ``DataError``);
- the admin's add form, through the test client as a superuser: the page
  comes back (no 500) with the message on the field;
- raw SQL: the database refuses what it can judge, with its own error; what
  only Python can judge (cron, the clock, the allowlist) is written, and the
  planner or the worker deals with it (see the tests at the end).

Each time, nothing is saved.
"""

import dataclasses
import datetime as dt
import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import DataError, InternalError, OperationalError
from django.urls import reverse

from sisy_pg.models import Task, TaskDefinitionError, task_with_callable
from tests.integration.helpers import form_data
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

TAKEN = "taken label"
LONG_LABEL = "x" * 300
PAST = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
# Deep enough to exhaust a recursive check in a web request (500 levels
# typed into the admin's form answered 500 before the limits).
DEEP: dict[str, Any] = {"deep": functools.reduce(lambda inner, _: [inner], range(499), [])}


@dataclasses.dataclass(frozen=True)
class BadInput:
    name: str
    field: str  # the field the message is on (form and save())
    message: str  # in the message of the API and of save()
    # The Python API: a call that must raise a ValueError with ``message``
    # (None: nothing to give task_with_callable, the mistake is made on the row).
    api: Callable[[], Any] | None
    # Applied to a task from task_with_callable before save().
    on_task: Callable[[Task], None]
    form: dict[str, str]  # overrides of the admin form's data
    form_message: str
    # A column = value for raw SQL, and the database's message (None: the
    # database cannot judge it and accepts the row).
    sql: tuple[str, str]
    sql_message: str | None


def _set(**fields: Any) -> Callable[[Task], None]:
    def apply(task: Task) -> None:
        for name, value in fields.items():
            setattr(task, name, value)

    return apply


BAD_INPUTS = [
    BadInput(
        name="schedule with no instant",
        field="schedule",
        message="has no instant",
        api=lambda: task_with_callable(jobs.record, schedule="0 0 31 2 *"),
        on_task=_set(schedule="0 0 31 2 *"),
        form={"schedule": "0 0 31 2 *"},
        form_message="has no instant",
        sql=("schedule", "'0 0 31 2 *'"),
        sql_message=None,  # the planner records it in error
    ),
    BadInput(
        name="end_running in the past",
        field="end_running",
        message="is in the past: the task would never run",
        api=None,
        on_task=_set(end_running=PAST),
        form={"end_running_0": "2020-01-01", "end_running_1": "00:00:00"},
        form_message="is in the past: the task would never run",
        sql=("end_running", "'2020-01-01T00:00:00Z'"),
        sql_message=None,  # the planner marks the task finished at once
    ),
    BadInput(
        name="label too long",
        field="label",
        message="label is 300 characters long; at most 255",
        api=lambda: task_with_callable(jobs.record, label=LONG_LABEL),
        on_task=_set(label=LONG_LABEL),
        form={"label": LONG_LABEL},
        form_message="at most 255 characters",
        sql=("label", f"'{LONG_LABEL}'"),
        sql_message="value too long for type character varying(255)",
    ),
    BadInput(
        name="label taken",
        field="label",
        message=f"a task labelled '{TAKEN}' already exists (id ",
        api=None,  # checked by save(): the label may change before
        on_task=_set(label=TAKEN),
        form={"label": TAKEN},
        form_message=f"a task labelled '{TAKEN}' already exists (id ",
        sql=("label", f"'{TAKEN}'"),
        sql_message="sisy_task_label_unique",
    ),
    BadInput(
        name="userdata with a datetime",
        field="userdata",
        message="userdata must be JSON-serialisable",
        api=lambda: task_with_callable(jobs.record, userdata={"when": PAST}),
        on_task=_set(userdata={"when": PAST}),
        form={"userdata": '{"when": 2020-01-01}'},
        form_message="Enter a valid JSON",
        sql=("userdata", """'{"when": 2020-01-01}'"""),
        sql_message="invalid input syntax for type json",
    ),
    BadInput(
        name="userdata with an object",
        field="userdata",
        message="Object of type object is not JSON serializable",
        api=lambda: task_with_callable(jobs.record, userdata={"thing": object()}),
        on_task=_set(userdata={"nested": [{"thing": object()}]}),
        form={"userdata": "{'python': 'dict'}"},
        form_message="Enter a valid JSON",
        sql=("userdata", "'[1, 2]'"),
        sql_message="sisy_task_userdata_is_object",
    ),
    BadInput(
        name="userdata with NaN",
        field="userdata",
        message="Out of range float values are not JSON compliant",
        api=lambda: task_with_callable(jobs.record, userdata={"x": float("nan")}),
        on_task=_set(userdata={"x": float("inf")}),
        form={"userdata": '{"x": NaN}'},
        form_message="Out of range float values",  # the form's json reads NaN; the model refuses it
        sql=("userdata", """'{"x": NaN}'"""),
        sql_message="invalid input syntax for type json",
    ),
    BadInput(
        name="userdata with a NUL character",
        field="userdata",
        message="userdata must not contain the NUL character",
        api=lambda: task_with_callable(jobs.record, userdata={"text": "a\x00b"}),
        on_task=_set(userdata={"nested": ["a\x00b"]}),
        form={"userdata": '{"text": "a\\u0000b"}'},
        form_message="NUL",
        sql=("userdata", """'{"text": "a\\u0000b"}'"""),
        sql_message="unsupported Unicode escape sequence",
    ),
    BadInput(
        name="label with a NUL character",
        field="label",
        message="label must not contain the NUL character",
        api=lambda: task_with_callable(jobs.record, label="a\x00b"),
        on_task=_set(label="a\x00b"),
        form={"label": "a\x00b"},
        form_message="Null characters are not allowed",  # Django's form field says it first
        sql=("label", "'a' || chr(0) || 'b'"),
        sql_message="null character not permitted",
    ),
    BadInput(
        name="userdata nested 500 levels deep",
        field="userdata",
        message="userdata is nested more than 32 levels deep",
        api=lambda: task_with_callable(jobs.record, userdata=DEEP),
        on_task=_set(userdata=DEEP),
        form={"userdata": json.dumps(DEEP)},
        form_message="This JSON is nested more than 32 levels deep",
        sql=("userdata", f"'{json.dumps(DEEP)}'"),
        sql_message="sisy_task_userdata_within_limits",
    ),
    BadInput(
        name="options nested 500 levels deep",
        field="options",
        message="options is nested more than 32 levels deep",
        api=None,
        on_task=_set(options={"later": DEEP}),
        form={"options": json.dumps({"later": DEEP})},
        form_message="This JSON is nested more than 32 levels deep",
        sql=("options", f"""'{json.dumps({"later": DEEP})}'"""),
        sql_message="sisy_task_options_within_limits",
    ),
    BadInput(
        name="iterations beyond an integer",
        field="iterations",
        message="iterations must be a whole number from 0 (forever) to 2147483647, not 2147483648",
        api=None,
        on_task=_set(iterations=2**31),
        form={"iterations": str(2**31)},
        form_message="less than or equal to 2147483647",
        sql=("iterations", str(2**31)),
        sql_message="integer out of range",
    ),
    BadInput(
        name="label with a newline",
        field="label",
        message="label must not contain control characters",
        api=lambda: task_with_callable(jobs.record, label="one\n 2  forged line"),
        on_task=_set(label="one\n 2  forged line"),
        form={"label": "one\n 2  forged line"},
        form_message="label must not contain control characters (it has '\\n')",
        sql=("label", "'one' || chr(10) || ' 2  forged line'"),
        sql_message="sisy_task_label_printable",
    ),
    BadInput(
        name="label with an ANSI escape",
        field="label",
        message="label must not contain control characters",
        api=lambda: task_with_callable(jobs.record, label="\x1b[31mred"),
        on_task=_set(label="\x1b[31mred"),
        form={"label": "\x1b[31mred"},
        form_message="label must not contain control characters (it has '\\x1b')",
        sql=("label", "chr(27) || '[31mred'"),
        sql_message="sisy_task_label_printable",
    ),
    BadInput(
        name="callable outside SISY_ALLOWED_CALLABLES",
        field="callable_info",
        message="refused: 'os.system' is not under a module prefix of SISY_ALLOWED_CALLABLES",
        api=lambda: task_with_callable("os.system"),
        on_task=_set(callable_info={"func_type": "function", "func_path": "os.system"}),
        form={"callable_path": "this.nothing"},  # importing `this` prints the Zen of Python
        form_message="refused: 'this.nothing' is not under a module prefix",
        sql=("callable_info", """'{"func_type": "function", "func_path": "os.system"}'"""),
        sql_message=None,  # the worker refuses to run it (test_worker_e2e.py)
    ),
]
IDS = [bad.name for bad in BAD_INPUTS]


@pytest.fixture(autouse=True)
def taken_label():
    task_with_callable(jobs.record, label=TAKEN).save()


def assert_nothing_saved():
    assert list(Task.objects.values_list("label", flat=True)) == [TAKEN]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=IDS)
def test_python_api(bad):
    if bad.api is not None:
        with pytest.raises(ValueError, match=re.escape(bad.message)):
            bad.api()
    task = task_with_callable(jobs.record, label="new")
    bad.on_task(task)
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert isinstance(info.value, ValueError)
    assert bad.message in " ".join(info.value.message_dict[bad.field]), info.value.message_dict
    assert_nothing_saved()


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=IDS)
def test_admin_form(admin_client, bad):
    imported_before = set(sys.modules)
    # The admin names the callable in its own field; the model's callable_info is not shown.
    field = "callable_path" if bad.field == "callable_info" else bad.field
    response = admin_client.post(
        reverse("admin:sisy_task_add"), form_data(**{"label": "new", **bad.form})
    )
    assert response.status_code == 200  # the form again, with its errors; never a 500
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert bad.form_message in " ".join(errors[field]), errors
    assert_nothing_saved()
    assert "this" not in set(sys.modules) - imported_before


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=IDS)
def test_raw_sql(bad):
    column, value = bad.sql
    columns = {
        "label": "'new'",
        "callable_info": """'{"func_type": "function", "func_path": "tests.testapp.jobs.record"}'""",
        "timezone": "'UTC'",
        column: value,
    }
    insert = f"INSERT INTO sisy_task ({', '.join(columns)}) VALUES ({', '.join(columns.values())})"
    with connection.cursor() as cursor:
        if bad.sql_message is None:
            cursor.execute(insert)  # accepted: see the tests below
            return
        with (
            pytest.raises((IntegrityError, DataError, InternalError, OperationalError)) as info,
            transaction.atomic(),
        ):
            cursor.execute(insert)
    assert bad.sql_message in str(info.value)
    assert_nothing_saved()


def test_two_unlabelled_tasks_of_one_callable_clash_with_a_clear_error():
    """Sisy's default label is the callable's dotted path: a second one needs a label."""
    first = task_with_callable(jobs.record)
    first.save()
    with pytest.raises(TaskDefinitionError) as info:
        task_with_callable(jobs.record).save()
    (message,) = info.value.message_dict["label"]
    assert message.startswith(
        f"a task labelled 'tests.testapp.jobs.record' already exists (id {first.pk})"
    )
    assert "labelled with its callable's dotted path" in message
    task_with_callable(jobs.record, label="the second one").save()


def test_a_label_taken_between_the_check_and_the_insert_is_still_a_clear_error(monkeypatch):
    # The database's constraint decides a race; save() translates its error.
    monkeypatch.setattr(Task, "definition_errors", lambda self, using=None: {})
    with pytest.raises(TaskDefinitionError) as info:
        task_with_callable(jobs.record, label=TAKEN).save()
    assert f"a task labelled '{TAKEN}' was just created" in info.value.message_dict["label"][0]


def test_an_existing_task_may_keep_its_label_and_end_in_the_past():
    task = Task.objects.get(label=TAKEN)
    task.end_running = PAST  # ends it: only a new task is refused this
    task.save()
    assert Task.objects.get(pk=task.pk).end_running == PAST


# --- What only Python can judge, written with raw SQL -------------------------


@pytest.mark.django_db(transaction=True)
def test_the_planner_flags_a_raw_schedule_with_no_instant_and_finishes_a_raw_past_end():
    from tests.integration.helpers import run_planner

    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO sisy_task (label, callable_info, timezone, schedule, end_running)
            VALUES ('never', '{"func_type": "function", "func_path": "tests.testapp.jobs.record"}',
                    'UTC', '0 0 31 2 *', NULL),
                   ('ended', '{"func_type": "function", "func_path": "tests.testapp.jobs.record"}',
                    'UTC', '* * * * *', '2020-01-01T00:00:00Z')""")
    run_planner("plan_pending")
    never = Task.objects.get(label="never")
    assert never.next_run is None and "has no instant" in never.error
    ended = Task.objects.get(label="ended")
    assert ended.next_run is None and ended.finished and not ended.runs.exists()


# --- The policies in Task.options, at the three layers ------------------------------------

BAD_OPTIONS = [
    ({"missed": "sometimes"}, "options['missed'] must be one of coalesce, skip, all"),
    ({"overlap": "queue"}, "options['overlap'] must be one of allow, skip, buffer_one"),
    ({"grace": -1}, "options['grace'] must be a number of seconds, from 0 to 315360000"),
    ({"grace": 10**400}, "options['grace'] must be a number of seconds, from 0 to 315360000"),
    ({"timeout": "1h"}, "options['timeout'] must be a number of seconds, more than 0"),
    ({"retries": 2.5}, "options['retries'] must be a whole number from 0 to 100"),
    ({"retry_delay": 0}, "options['retry_delay'] must be a number of seconds, more than 0"),
    ({"retrys": 3}, "options: unknown key 'retrys'"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_are_refused_by_save_naming_the_key(options, message):
    task = task_with_callable(jobs.record)
    task.options = options
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert message in " ".join(info.value.message_dict["options"])
    assert_nothing_saved()


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_are_a_form_error_on_the_field(admin_client, options, message):
    response = admin_client.post(
        reverse("admin:sisy_task_add"), form_data(options=json.dumps(options))
    )
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors["options"])
    assert_nothing_saved()


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS[:-1])  # SQL leaves unknown keys
def test_bad_options_are_refused_by_the_database(options, message):
    with (
        pytest.raises(IntegrityError, match="sisy_task_options_valid"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO sisy_task (callable_info, options) VALUES (%s, %s)",
            [
                json.dumps({"func_type": "function", "func_path": "tests.testapp.jobs.record"}),
                json.dumps(options),
            ],
        )
    assert_nothing_saved()


@pytest.mark.parametrize("name", ["Europe", "x" * 300, "../../etc/passwd"])
def test_a_zone_name_that_is_a_directory_or_too_long_is_an_error_on_the_field(name):
    task = task_with_callable(jobs.record, label="new")
    task.timezone = name
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert "unknown time zone" in " ".join(info.value.message_dict["timezone"])
    assert_nothing_saved()


def test_a_zone_python_knows_and_postgresql_does_not_is_an_error_on_the_field():
    import zoneinfo

    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_timezone_names")
        known = {name for (name,) in cursor.fetchall()}
    unknown = sorted(zoneinfo.available_timezones() - known)
    if not unknown:
        pytest.skip("this PostgreSQL knows every zone Python's tz database has")
    task = task_with_callable(jobs.record, label="new")
    task.timezone = unknown[0]
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert "PostgreSQL does not know the time zone" in " ".join(info.value.message_dict["timezone"])
    assert_nothing_saved()
    from sisy_pg.forms import timezone_names

    assert unknown[0] not in timezone_names()  # the admin does not offer it
