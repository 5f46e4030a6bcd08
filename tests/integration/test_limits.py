"""Bounded input (sisy_pg/limits.py): userdata, options and labels at every layer.

Python (``task_with_callable``, ``save()``, ``bulk_create``), the admin's form and
the database's constraints refuse the same documents, each with a message on
its field; rows written before the limits (simulated: the constraints dropped, rows
written by raw SQL) are shown by the admin and ``manage.py sisy``, and a worker
breaks their task instead of running it.
"""

import io
import json
import re

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models.expressions import RawSQL
from django.test import override_settings
from django.urls import reverse
from django.utils.html import escape

from sisy_pg import limits
from sisy_pg.models import Task, TaskDefinitionError, TaskRun, task_with_callable
from tests.helpers import nested
from tests.integration.helpers import (
    CALLABLE_INFO,
    TOO_DEEP_TEXT,
    before_the_limits,
    change_data,
    form_data,
    insert_raw,
)
from tests.testapp import jobs


def sql_error(document: object) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT sisy_json_limits_error_v1(%s::jsonb)", [json.dumps(document)])
        return cursor.fetchone()[0]


def sql_size(document: object) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT octet_length(%s::jsonb::text)", [json.dumps(document)])
        return cursor.fetchone()[0]


# --- one set of limits: Python's defaults are the database's ------------------------


@pytest.mark.django_db
def test_python_and_the_database_draw_the_depth_limit_at_the_same_level():
    assert limits.max_depth() == limits.HARD_MAX_DEPTH == 32
    for depth in (1, 2, 31, 32):
        assert limits.json_error("userdata", nested(depth)) is None
        assert sql_error(nested(depth)) is None
    for depth in (33, 34, 200):
        assert "nested more than 32 levels" in limits.json_error("userdata", nested(depth))
        assert sql_error(nested(depth)) == "is nested more than 32 levels deep (at most 32)"
    # Objects count as arrays do, and scalars do not.
    deep_objects = {"v": 1}
    for _ in range(31):
        deep_objects = {"o": deep_objects}
    assert limits.json_error("userdata", deep_objects) is None
    assert sql_error(deep_objects) is None
    assert limits.json_error("userdata", {"o": deep_objects}) is not None
    assert sql_error({"o": deep_objects}) is not None


@pytest.mark.django_db
def test_python_and_the_database_measure_the_size_alike_floats_included():
    assert limits.max_bytes() == limits.HARD_MAX_BYTES == 1024 * 1024
    # PostgreSQL writes 1e-07 as 0.0000001 and 1e300 with its 300 zeros; the
    # text Python measures is the one PostgreSQL will write.
    sample = {"floats": [1e-07, 1e300, 0.1, 123.0, 2.5e-12], "text": 'é\n\u0001"\\ 𝄞', "n": None}
    base = sql_size(sample)
    padding = limits.HARD_MAX_BYTES - base
    at_limit = {**sample, "pad": "a" * (padding - len(', "pad": ""'))}
    assert sql_size(at_limit) == limits.HARD_MAX_BYTES
    assert limits.json_error("userdata", at_limit) is None
    assert sql_error(at_limit) is None
    beyond = {**at_limit, "pad": at_limit["pad"] + "a"}
    assert limits.json_error("userdata", beyond) == (
        f"userdata is {limits.HARD_MAX_BYTES + 1} bytes of JSON; at most 1048576 are allowed"
    )
    assert sql_error(beyond) == f"is {limits.HARD_MAX_BYTES + 1} bytes of JSON (at most 1048576)"


@pytest.mark.django_db
@override_settings(SISY_JSON_MAX_DEPTH=3, SISY_JSON_MAX_BYTES=100)
def test_settings_lower_the_limits_for_python():
    with pytest.raises(TaskDefinitionError) as info:
        task_with_callable(jobs.record, userdata=nested(4))
    assert "nested more than 3 levels deep" in info.value.message_dict["userdata"][0]
    with pytest.raises(TaskDefinitionError) as info:
        task_with_callable(jobs.record, userdata={"text": "a" * 100})
    assert "at most 100 are allowed" in info.value.message_dict["userdata"][0]
    task_with_callable(jobs.record, label="small", userdata=nested(3)).save()


# --- Python: one function, no recursion ------------------------------------------


@pytest.mark.django_db
def test_task_with_callable_save_and_bulk_create_refuse_each_document_on_its_field():
    with pytest.raises(TaskDefinitionError) as info:
        task_with_callable(jobs.record, userdata=nested(100_000))
    assert "userdata is nested more than 32 levels" in info.value.message_dict["userdata"][0]
    task = task_with_callable(jobs.record, label="options")
    task.options = {"later": nested(1000)}
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert "options is nested more than 32 levels" in info.value.message_dict["options"][0]
    fine = task_with_callable(jobs.record, label="fine")
    wide = task_with_callable(jobs.record, label="wide")
    wide.userdata = {"x": "a" * limits.HARD_MAX_BYTES}
    with pytest.raises(TaskDefinitionError) as info:
        Task.objects.bulk_create([fine, wide])
    assert "bytes of JSON; at most 1048576" in info.value.message_dict["1.userdata"][0]
    assert not Task.objects.exists()


# --- the database -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("column", ["userdata", "options", "callable_info"])
def test_the_database_refuses_a_document_beyond_the_limits(column):
    values = {"userdata": "{}", "options": "{}", "callable_info": CALLABLE_INFO}
    values[column] = (
        TOO_DEEP_TEXT
        if column != "callable_info"
        else json.dumps({**json.loads(CALLABLE_INFO), "deep": nested(40)})
    )
    with (
        pytest.raises(IntegrityError, match=f"sisy_task_{column}_within_limits"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO sisy_task (label, timezone, userdata, options, callable_info) "
            "VALUES ('raw', 'UTC', %s, %s, %s)",
            [values["userdata"], values["options"], values["callable_info"]],
        )


@pytest.mark.django_db
@pytest.mark.parametrize("character", ["\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\x9b"])
def test_the_database_refuses_every_control_character_in_a_label(character):
    assert limits.control_characters(f"a{character}b") == [character]
    with (
        pytest.raises(IntegrityError, match="sisy_task_label_printable"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO sisy_task (label, timezone, callable_info) VALUES (%s, 'UTC', %s)",
            [f"a{character}b", CALLABLE_INFO],
        )


@pytest.mark.django_db
def test_printable_labels_pass_everywhere():
    label = "Rapport é 𝄞 — « nightly » (v2)"
    task_with_callable(jobs.record, label=label).save()
    assert Task.objects.get().label == label
    assert limits.printable(label) == label


# --- the admin's form ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["userdata", "options"])
@pytest.mark.parametrize("depth", [500, 5000])
def test_a_deep_document_typed_into_the_form_is_an_error_on_its_field(admin_client, field, depth):
    text = '{"x": ' + "[" * depth + "]" * depth + "}"
    response = admin_client.post(
        reverse("admin:sisy_task_add"), form_data(label="typed", **{field: text})
    )
    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors[field]
    assert "nested more than 32 levels deep" in message or "cannot be read" in message
    assert escape(text) in response.content.decode()  # shown again as typed
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_the_form_lets_a_browser_send_no_more_than_the_size_limit(admin_client):
    page = admin_client.get(reverse("admin:sisy_task_add")).content.decode()
    for field in ("userdata", "options"):
        tag = re.search(f'<textarea[^>]*name="{field}"[^>]*>', page).group(0)
        assert 'maxlength="1048576"' in tag


@pytest.mark.django_db
def test_a_text_cut_at_the_size_limit_by_a_browser_is_called_too_big(admin_client):
    """10 MB pasted: the browser sends the first 1,048,576 characters, which do not parse."""
    cut = json.dumps({"x": "a" * 10_000_000})[: limits.max_bytes()]
    response = admin_client.post(reverse("admin:sisy_task_add"), form_data(userdata=cut))
    assert response.status_code == 200
    (message,) = response.context["adminform"].form.errors["userdata"]
    assert message.startswith("This JSON is too big: at most 1,048,576 bytes")
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_a_request_beyond_data_upload_max_memory_size_is_django_s_400(admin_client):
    """10 MB posted: Django refuses the body (DATA_UPLOAD_MAX_MEMORY_SIZE) before any view.

    In a real deployment its CSRF middleware reads the body first, so no view
    of sisy's can answer instead: the project's 400.html template is the page
    (docs/admin.md). Nothing is saved.
    """
    big = json.dumps({"x": "a" * 10_000_000})
    response = admin_client.post(reverse("admin:sisy_task_add"), form_data(userdata=big))
    assert response.status_code == 400
    assert not Task.objects.exists()


# --- rows written before the limits -----------------------------------------------


def python_reads(text: str) -> bool:
    try:
        json.loads(text)
    except RecursionError:
        return False
    return True


@pytest.mark.django_db
def test_the_admin_and_the_cli_show_rows_written_before_the_limits(admin_client):
    admin_client.raise_request_exception = True  # a RecursionError fails the test
    with before_the_limits("userdata", "options", "label"):
        deep = insert_raw("deep", userdata=TOO_DEEP_TEXT, options=TOO_DEEP_TEXT)
        forged = insert_raw("ok\n99  forged  scheduled\x1b[31m")
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO sisy_taskrun (task_id, scheduled_for, status, details) "
                "VALUES (%s, now(), 'failed', %s)",
                [deep, TOO_DEEP_TEXT],
            )
        task = Task.objects.get(pk=deep)
        if python_reads(TOO_DEEP_TEXT):
            # Python 3.13's parser reads what PostgreSQL can store (3.10 and 3.11's stop
            # near 1,000 levels): the pages below must still not fail.
            assert task.userdata == json.loads(TOO_DEEP_TEXT)
        else:
            assert isinstance(task.userdata, limits.UnreadableJSON)
            assert isinstance(task.options, limits.UnreadableJSON)
            assert task.policy == Task(options={}).policy  # the defaults

        for url in (
            reverse("admin:sisy_task_changelist"),
            reverse("admin:sisy_taskrun_changelist"),
            reverse("admin:sisy_taskrun_change", args=[TaskRun.objects.get().pk]),
        ):
            assert admin_client.get(url).status_code == 200, url
        change = reverse("admin:sisy_task_change", args=[deep])
        page = admin_client.get(change)
        assert page.status_code == 200
        assert escape(TOO_DEEP_TEXT) in page.content.decode()  # its text, to be replaced
        # Saved as it is: an error on each field, nothing written.
        response = admin_client.post(
            change, change_data(task, userdata=TOO_DEEP_TEXT, options=TOO_DEEP_TEXT)
        )
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert "userdata" in errors and "options" in errors
        # Replaced: saved.
        response = admin_client.post(change, change_data(task))
        assert response.status_code == 302
        assert Task.objects.get(pk=deep).userdata == {}

        # save() names the field of a row read as it was.
        with pytest.raises(TaskDefinitionError) as info:
            Task.objects.get(pk=forged).save()
        assert "label must not contain control characters" in info.value.message_dict["label"][0]

        # No RecursionError: the documents read as UnreadableJSON (or, where Python
        # reads them, are shown as they are).
        TaskRun.objects.all().delete()
        Task.objects.filter(pk=deep).update(userdata=RawSQL("%s::jsonb", [TOO_DEEP_TEXT]))
        out = io.StringIO()
        call_command("sisy", "list", stdout=out)
        call_command("sisy", "show", "deep", stdout=out)
        call_command("sisy", "show", "deep", "--json", stdout=out)
        shown = "[" * 5000 if python_reads(TOO_DEEP_TEXT) else "<unreadable JSON: 10010 characters"
        assert shown in out.getvalue()


@pytest.mark.django_db
def test_sisy_list_and_show_print_no_forged_line_for_a_label_written_before_the_rule():
    with before_the_limits("label"):
        forged = insert_raw("ok\n99  forged  scheduled\x1b[31m")
        out = io.StringIO()
        call_command("sisy", "list", stdout=out)
        call_command("sisy", "show", str(forged), stdout=out)
    assert all(not line.startswith("99") for line in out.getvalue().splitlines())
    assert "\x1b" not in out.getvalue()
    assert "ok\\n99  forged  scheduled\\x1b[31m" in out.getvalue()  # limits.printable


# --- numbers Python cannot read back ------------------------------------------------


@pytest.mark.django_db
def test_python_and_the_database_draw_the_number_length_limit_alike():
    longest, too_long = {"n": 10**4000 - 1}, {"n": 10**4000}
    assert limits.json_error("userdata", longest) is None
    assert sql_error(longest) is None
    assert "more than 4000 digits" in limits.json_error("userdata", too_long)
    assert "more than 4000 digits" in sql_error(too_long)
    assert "more than 4000 digits" in sql_error({"n": [-(10**4000)]})


@pytest.mark.django_db
def test_a_number_too_long_for_python_written_before_the_rule_is_unreadable_not_a_crash():
    """jsonb stores 1e5000 as 5,001 digits; Python refuses to convert more than 4,300."""
    with before_the_limits("userdata", "options"):
        long = insert_raw("long", userdata='{"n": 1e5000}', options='{"n": 1e5000}')
        task = Task.objects.get(pk=long)
        assert isinstance(task.userdata, limits.UnreadableJSON)
        assert isinstance(task.options, limits.UnreadableJSON)
        out = io.StringIO()
        call_command("sisy", "list", stdout=out)
        call_command("sisy", "show", "long", stdout=out)
        assert "long" in out.getvalue()


@pytest.mark.django_db
def test_callable_info_beyond_the_limits_is_an_error_on_its_field_not_an_integrity_error():
    task = task_with_callable(jobs.record, label="big")
    task.callable_info = {**task.callable_info, "extra": nested(40)}
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert "nested more than 32 levels" in info.value.message_dict["callable_info"][0]


@pytest.mark.django_db
def test_a_boolean_is_no_number_of_iterations():
    task = task_with_callable(jobs.record, label="bool")
    task.iterations = True
    with pytest.raises(TaskDefinitionError) as info:
        task.save()
    assert "iterations must be a whole number" in info.value.message_dict["iterations"][0]


@pytest.mark.django_db
def test_a_task_at_the_end_of_fire_count_does_not_fail_the_planner_s_batch():
    ended = task_with_callable(jobs.record, label="ended", schedule="0 0 1 1 *")
    ended.save()
    healthy = task_with_callable(jobs.record, label="healthy", schedule="0 0 1 1 *")
    healthy.save()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE sisy_task SET fire_count = %s WHERE id = %s", [limits.INTEGER_MAX, ended.pk]
        )
        instant = "2030-01-01T00:00:00+00:00"
        cursor.execute(
            "SELECT sisy_store_decisions_v1('sisy', 'sisy.run', %s, %s, %s, %s, %s::jsonb[],"
            " %s, %s, %s, %s, 1)",
            [
                [ended.pk, healthy.pk],
                [instant, instant],
                ["queued", "queued"],
                ["", ""],
                ["{}", "{}"],
                [ended.pk, healthy.pk],
                ["2031-01-01T00:00:00+00:00"] * 2,
                [False, False],
                ["", ""],
            ],
        )
        cursor.execute("SELECT label, fire_count FROM sisy_task ORDER BY label")
        assert cursor.fetchall() == [("ended", limits.INTEGER_MAX), ("healthy", 1)]
