"""Describing and resolving callables: every kind Sisy accepts, every mistake refused."""

import pytest
from django.test import override_settings

from sisy_pg import callables
from sisy_pg.callables import CallableError, CallableRefused
from tests.testapp import jobs
from tests.testapp.models import SlugWidget, UUIDWidget, Widget

pytestmark = pytest.mark.django_db


def test_describe_bound_model_method_uses_the_row_pk():
    widget = Widget.objects.create()
    info = callables.describe(widget.touch)
    assert info == {
        "func_type": "instancemethod",
        "module_name": "tests.testapp.models",
        "class_name": "Widget",
        "class_path": "tests.testapp.models.Widget",
        "func_name": "touch",
        "func_path": "tests.testapp.models.Widget.touch",
        "model_pk": widget.pk,
    }


@pytest.mark.parametrize("model", [Widget, UUIDWidget, SlugWidget])
def test_dotted_path_with_pk_override_for_each_pk_type(model):
    row = model.objects.create(**({"slug": "the-slug"} if model is SlugWidget else {}))
    path = f"tests.testapp.models.{model.__name__}.touch"
    info = callables.describe(path, pk_override=row.pk)
    assert info["func_type"] == "instancemethod"
    assert info["model_pk"] == (str(row.pk) if model is UUIDWidget else row.pk)
    bound = callables.resolve(info)
    assert bound.__self__ == row and bound.__func__ is model.touch


def test_uuid_pk_given_as_string_is_accepted():
    row = UUIDWidget.objects.create()
    info = callables.describe("tests.testapp.models.UUIDWidget.touch", pk_override=str(row.pk))
    assert info["model_pk"] == str(row.pk)


def test_resolve_reports_a_deleted_row():
    row = Widget.objects.create()
    info = callables.describe(row.touch)
    row.delete()
    with pytest.raises(CallableError, match="does not exist"):
        callables.resolve(info)


# --- SISY_ALLOWED_CALLABLES ---------------------------------------------------------


@override_settings(SISY_ALLOWED_CALLABLES=["tests.testapp.jobs"])
def test_an_explicit_allowlist_replaces_the_default():
    assert callables.describe(jobs.record)["func_path"] == "tests.testapp.jobs.record"
    widget = Widget.objects.create()
    with pytest.raises(CallableRefused, match=r"as set in the settings: tests\.testapp\.jobs"):
        callables.describe(widget.touch)


# --- One rule: what save() stores is what the worker calls ----------------------------


def test_a_model_instance_method_needs_its_row_in_the_stored_description():
    info = {"func_type": "instancemethod", "func_path": "tests.testapp.models.Widget.touch"}
    with pytest.raises(CallableError, match="pass pk_override="):
        callables.resolve(info)
    row = Widget.objects.create()
    bound = callables.resolve({**info, "model_pk": row.pk})
    assert bound.__self__ == row and bound.__func__ is Widget.touch


@pytest.mark.parametrize(
    ("the_callable", "kwargs", "message"),
    [
        ("tests.testapp.jobs.missing", {}, "'tests.testapp.jobs' has no attribute 'missing'"),
        ("tests.testapp.nomodule.func", {}, "'tests.testapp' has no attribute 'nomodule'"),
        (
            "tests.testapp.jobs.two_params",
            {},
            "exactly one parameter named 'message' (it takes: message, other)",
        ),
        ("tests.testapp.jobs.wrong_name", {}, "(it takes: msg)"),
        (jobs.no_params, {}, "(it takes: no parameters)"),
        ("tests.testapp.jobs.Things", {}, "is a class, not a callable"),
        (jobs.Things, {}, "is a class, not a callable"),
        ("tests.testapp.jobs", {}, "is a module, not a callable"),
        (jobs, {}, "is a module, not a callable"),
        ("tests.testapp.jobs.NOT_CALLABLE", {}, "is not callable"),
        (lambda message: None, {}, "cannot be imported by a worker"),
        (
            "tests.testapp.jobs.Things.plain_instance_job",
            {"pk_override": 1},
            "which is not a Django model",
        ),
        ("tests.testapp.models.Widget.touch", {}, "pass pk_override="),
        (
            "tests.testapp.models.Widget.touch",
            {"pk_override": 999999},
            "Widget with pk=999999 does not exist",
        ),
        ("tests.testapp.models.Widget.two_params", {"pk_override": 1}, "exactly one parameter"),
        (
            "tests.testapp.models.UUIDWidget.touch",
            {"pk_override": "not-a-uuid"},
            "not a valid primary key for UUIDWidget",
        ),
        (
            "tests.testapp.jobs.record",
            {"pk_override": 1},
            "pk_override is only for model instance methods",
        ),
        ("not a path", {}, "is not a dotted path"),
        (42, {}, "has no importable dotted path"),
    ],
)
def test_refused_with_a_message_that_names_the_problem(the_callable, kwargs, message):
    with pytest.raises(CallableError) as info:
        callables.describe(the_callable, **kwargs)
    assert isinstance(info.value, ValueError)
    assert message in str(info.value)
