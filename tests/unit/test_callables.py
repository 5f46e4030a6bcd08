"""Callables described and resolved (sisy_pg.callables): what is refused, and why, before any import or row."""

import json
import sys

import pytest
from django.test import override_settings

from sisy_pg import callables, conf
from sisy_pg.callables import CallableError, CallableRefused
from tests.testapp import jobs
from tests.testapp.models import Widget


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


def test_unsaved_instance_is_refused():
    with pytest.raises(CallableError, match="unsaved Widget"):
        callables.describe(Widget().touch)


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


def test_default_allowlist_is_the_projects_own_apps():
    # tests/settings.py installs django.contrib.*, procrastinate's app, sisy_pg
    # and tests.testapp: only the last is the project's own.
    assert conf.allowed_callable_prefixes() == ("tests.testapp",)


@pytest.mark.parametrize(
    "path",
    [
        "os.system",
        "subprocess.run",
        "this.nothing",  # importing `this` prints the Zen of Python
        "tests.forbidden_jobs.job",  # under `tests`, not under `tests.testapp`
        "tests.testappx.jobs.record",  # a prefix is a whole module name
        "django.core.management.call_command",
        "procrastinate.contrib.django.app",
        "sisy_pg.runner.run_task",
        "sisy.models.task_with_callable",
    ],
)
def test_paths_outside_the_allowlist_are_refused_before_any_import(path):
    top = path.split(".")[0] if path.split(".")[0] != "tests" else ".".join(path.split(".")[:2])
    imported_before = top in sys.modules
    with pytest.raises(CallableRefused) as info:
        callables.describe(path)
    assert str(info.value).startswith(f"refused: {path!r} is not under a module prefix")
    assert "SISY_ALLOWED_CALLABLES" in str(info.value) and "tests.testapp" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert (top in sys.modules) == imported_before


def test_callable_objects_outside_the_allowlist_are_refused():
    with pytest.raises(CallableRefused, match=r"refused: 'json\.dumps'"):
        callables.describe(json.dumps)


@override_settings(SISY_ALLOWED_CALLABLES=["nowhere"])
def test_an_allowed_prefix_that_does_not_import_is_an_unknown_module():
    with pytest.raises(CallableError, match="Module 'nowhere' not found"):
        callables.describe("nowhere.at_all.func")


@pytest.mark.parametrize("value", ["tests.testapp", ["tests testapp"], [""], [42], {"a": 1}])
def test_an_invalid_allowlist_refuses_everything(value):
    with (
        override_settings(SISY_ALLOWED_CALLABLES=value),
        pytest.raises(CallableRefused, match=r"refused: .*SISY_ALLOWED_CALLABLES must"),
    ):
        callables.describe(jobs.record)


def test_resolve_refuses_a_stored_path_outside_the_allowlist_without_importing_it(
    monkeypatch, tmp_path
):
    """What a worker does with a row written by raw SQL."""
    marker = tmp_path / "imported"
    monkeypatch.setenv("SISY_FORBIDDEN_IMPORT_MARKER", str(marker))
    info = {"func_type": "function", "func_path": "tests.forbidden_jobs.job"}
    with pytest.raises(CallableRefused, match=r"^refused: 'tests\.forbidden_jobs\.job'"):
        callables.resolve(info)
    assert not marker.exists() and "tests.forbidden_jobs" not in sys.modules
    with pytest.raises(CallableRefused, match=r"^refused: 'os\.system'"):
        callables.resolve({"func_type": "function", "func_path": "os.system"})


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (
            # Written by raw SQL: an instance method of a class that is no model.
            {
                "func_type": "instancemethod",
                "func_path": "tests.testapp.jobs.Things.plain_instance_job",
                "model_pk": 1,
            },
            "which is not a Django model",
        ),
        (
            {"func_type": "instancemethod", "func_path": "tests.testapp.jobs.record"},
            "stored with func_type 'instancemethod', but its func_type is 'function'",
        ),
        ({"func_type": "pickle", "func_path": "tests.testapp.jobs.record"}, "unknown func_type"),
        ({"func_type": "function"}, "must be a dict with a 'func_path'"),
    ],
)
def test_resolve_binds_instance_methods_of_django_models_only(info, message):
    with pytest.raises(CallableError, match=message):
        callables.resolve(info)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # The two walks of issue 13, through an allowed module's attributes.
        ("tests.testapp.models.uuid.os.system", "is nested too deep"),
        (
            "tests.testapp.jobs.__builtins__.update",
            "tests.testapp.jobs.__builtins__ is not a class (it is dict)",
        ),
        ("tests.testapp.models.uuid", "is a module, not a callable"),
        (
            "tests.testapp.models.uuid.uuid4",
            "tests.testapp.models.uuid is not a class (it is module)",
        ),
        # Imported into an allowed module, defined elsewhere.
        (
            "tests.testapp.borrowed.dumps",
            (
                "refused: 'tests.testapp.borrowed.dumps' is json.dumps, defined outside the "
                "module prefixes of SISY_ALLOWED_CALLABLES"
            ),
        ),
        (
            "tests.testapp.borrowed.F.resolve_expression",
            (
                "refused: 'tests.testapp.borrowed.F.resolve_expression' is "
                "django.db.models.expressions.F, defined outside"
            ),
        ),
        (
            "tests.testapp.borrowed.Borrowing.basename",
            "refused: 'tests.testapp.borrowed.Borrowing.basename' is posixpath.basename",
        ),
        (
            "tests.testapp.models.Widget.save",
            "refused: 'tests.testapp.models.Widget.save' is django.db.models.base.Model.save",
        ),
        (
            "tests.testapp.borrowed.alias_of_record",
            "is tests.testapp.jobs.record, not an object of that name: name it where it is defined",
        ),
        ("tests.testapp.borrowed.generator", "is a generator function"),
        ("tests.testapp.models.Widget.objects", "is not callable (it is ManagerDescriptor)"),
        (
            "tests.testapp.models.Widget.gone",
            "'tests.testapp.models.Widget' has no attribute 'gone'",
        ),
        ("tests.testapp.models.Widget.mro", "has no attribute 'mro'"),  # the metaclass's
    ],
)
def test_describe_and_resolve_refuse_alike(path, message):
    """describe() (save, the form, bulk_create) and resolve() (the worker) apply one rule."""
    with pytest.raises(CallableError) as described:
        callables.describe(path)
    with pytest.raises(CallableError) as resolved:
        callables.resolve({"func_type": "function", "func_path": path})
    assert message in str(described.value)
    assert str(resolved.value) == str(described.value)
    assert type(resolved.value) is type(described.value)
    assert isinstance(described.value, CallableRefused) == message.startswith("refused: ")


@pytest.mark.parametrize(
    ("path", "func_type"),
    [
        ("tests.testapp.borrowed.record", "function"),  # imported from another allowed module
        ("tests.testapp.borrowed.Child.inherited_job", "classmethod"),  # from an allowed base
    ],
)
def test_objects_defined_under_an_allowed_prefix_may_be_named_where_they_are_held(path, func_type):
    info = callables.describe(path)
    assert info["func_type"] == func_type and info["func_path"] == path
    assert callables.resolve(info)


@pytest.mark.parametrize(
    ("stored", "path", "actual"),
    [
        ("function", "tests.testapp.jobs.Things.class_job", "classmethod"),
        ("staticmethod", "tests.testapp.jobs.Things.class_job", "classmethod"),
        ("classmethod", "tests.testapp.jobs.Things.static_job", "staticmethod"),
        ("classmethod", "tests.testapp.jobs.record", "function"),
    ],
)
def test_a_stored_func_type_that_disagrees_with_the_code_is_refused(stored, path, actual):
    """Written by hand, or left by a change of the code: refused, not guessed at."""
    info = {"func_type": stored, "func_path": path}
    message = f"is stored with func_type {stored!r}, but its func_type is {actual!r}"
    with pytest.raises(CallableError, match=message):
        callables.resolve(info)
    with pytest.raises(CallableError, match=message):
        callables.validate_info(info)
    mended = callables.describe(path)  # described again, as the admin's form does
    assert mended["func_type"] == actual and callables.resolve(mended)


def test_nothing_is_pickled_or_evaluated():
    """Descriptions, userdata and job arguments are JSON; callables are found by import + getattr."""
    import re
    from pathlib import Path

    import sisy
    import sisy_pg

    forbidden = re.compile(
        r"\bimport (pickle|marshal|shelve)\b|\b(pickle|marshal)\.|\b(eval|exec)\("
    )
    sources = [
        *Path(sisy_pg.__file__).parent.rglob("*.py"),
        *Path(sisy.__file__).parent.rglob("*.py"),
    ]
    offending = [str(p) for p in sources if forbidden.search(p.read_text())]
    assert sources and not offending


def test_an_inherited_method_given_as_an_object_is_named_on_the_class_it_is_bound_to():
    """Not on the base class that defines it: the worker binds it as the caller did."""
    from tests.testapp import borrowed

    info = callables.describe(borrowed.Child.inherited_job)
    assert info["func_path"] == "tests.testapp.borrowed.Child.inherited_job"
    assert info["func_type"] == "classmethod"
    assert callables.resolve(info).__self__ is borrowed.Child


def test_a_method_of_an_abstract_model_is_refused_not_a_crash():
    with pytest.raises(CallableError, match="abstract model Touchable, which has no rows"):
        callables.describe("tests.testapp.models.Touchable.ping", pk_override=1)
    with pytest.raises(CallableError, match="abstract model Touchable"):
        callables.resolve(
            {
                "func_type": "instancemethod",
                "func_path": "tests.testapp.models.Touchable.ping",
                "model_pk": 1,
            }
        )
