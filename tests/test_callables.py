"""Describing and resolving callables: every kind Sisy accepts, every mistake refused."""

import pytest

from sisy_pg import callables
from sisy_pg.callables import CallableError
from tests.testapp import jobs
from tests.testapp.models import SlugWidget, UUIDWidget, Widget

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("the_callable", "func_type", "func_path"),
    [
        (jobs.record, "function", "tests.testapp.jobs.record"),
        ("tests.testapp.jobs.record", "function", "tests.testapp.jobs.record"),
        (jobs.Things.class_job, "classmethod", "tests.testapp.jobs.Things.class_job"),
        (
            "tests.testapp.jobs.Things.class_job",
            "classmethod",
            "tests.testapp.jobs.Things.class_job",
        ),
        (jobs.Things.static_job, "staticmethod", "tests.testapp.jobs.Things.static_job"),
        (
            "tests.testapp.jobs.Things.static_job",
            "staticmethod",
            "tests.testapp.jobs.Things.static_job",
        ),
    ],
)
def test_describe_functions_and_class_level_methods(the_callable, func_type, func_path):
    info = callables.describe(the_callable)
    assert info["func_type"] == func_type
    assert info["func_path"] == func_path
    assert info["module_name"] == "tests.testapp.jobs"
    assert "model_pk" not in info


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


@pytest.mark.parametrize(
    ("the_callable", "kwargs", "message"),
    [
        ("nowhere.at_all.func", {}, "unknown module"),
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


def test_unsaved_instance_is_refused():
    with pytest.raises(CallableError, match="unsaved Widget"):
        callables.describe(Widget().touch)


def test_resolve_reports_a_deleted_row():
    row = Widget.objects.create()
    info = callables.describe(row.touch)
    row.delete()
    with pytest.raises(CallableError, match="does not exist"):
        callables.resolve(info)


def test_resolve_returns_the_function():
    info = callables.describe(jobs.Things.class_job)
    assert callables.resolve(info) == jobs.Things.class_job
    assert callables.resolve(callables.describe(jobs.record)) is jobs.record


def test_validate_info_rechecks_a_stored_description():
    with pytest.raises(CallableError, match="func_path"):
        callables.validate_info({"func_type": "function"})
    with pytest.raises(CallableError, match="unknown func_type"):
        callables.validate_info({"func_type": "lambda", "func_path": "x.y"})
    assert callables.validate_info(callables.describe(jobs.record))["func_name"] == "record"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests.testapp.jobs.record", jobs.record),
        ("tests.testapp.jobs.Things.class_job", jobs.Things.class_job),
        ("tests.testapp.jobs.NOT_CALLABLE", 42),
        ("tests.testapp.jobs", jobs),
        ("tests.testapp.models.Widget.touch", Widget.touch),
    ],
)
def test_import_object_returns_the_object_at_any_dotted_path(path, expected):
    assert callables.import_object(path) == expected


@pytest.mark.parametrize(
    ("owner", "name", "message"),
    [
        (jobs, "gone", "'tests.testapp.jobs' has no attribute 'gone'"),
        (jobs.Things, "gone", "'tests.testapp.jobs.Things' has no attribute 'gone'"),
        (42, "gone", "'42' has no attribute 'gone'"),
    ],
)
def test_get_member_names_the_owner_and_the_missing_name(owner, name, message):
    with pytest.raises(CallableError) as info:
        callables.get_member(owner, name)
    assert str(info.value) == message
    assert callables.get_member(jobs, "record") is jobs.record
