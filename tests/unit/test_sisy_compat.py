"""Sisy's module-level helpers and API names (sisy.models), without a database."""

import re
import sys

import pytest

import sisy.models
import sisy_pg.models
from sisy.models import (
    func_from_string,
    funcinfo_from_string,
    get_func_info,
    get_member,
    get_module_member_by_dottedpath,
    task_with_callable,
)
from tests.testapp import jobs
from tests.testapp.models import Widget

SISY_NAMES = [
    "Task",
    "TaskRun",
    "func_from_string",
    "funcinfo_from_string",
    "get_func_info",
    "get_member",
    "get_module_member_by_dottedpath",
    "task_with_callable",
    "taskinfo_with_label",
]


# What Sisy 1.0b3's func_from_string raised for each (its texts; its own tests,
# run verbatim by test_sisy_original_tests.py, match some of them).
SISY_REFUSALS = [
    ("bogus", "Need full dotted path to task function"),
    ("nowhere.at_all.func", "Module nowhere not found"),
    ("tests.testapp", "Cannot call module directly"),
    ("tests.testapp.jobs.Things", "Cannot call class directly"),
    ("tests.testapp.jobs.gone", "Function gone is not a member of tests.testapp.jobs"),
    ("tests.testapp.jobs.Gone.job", "Class Gone is not a member of tests.testapp.jobs"),
    (
        "tests.testapp.jobs.Things.gone",
        "Function gone is not a member of tests.testapp.jobs.Things",
    ),
    (
        "tests.testapp.jobs.NOT_CALLABLE",
        "tests.testapp.jobs.NOT_CALLABLE (class 'int') is not a callable object",
    ),
    (
        "tests.testapp.models.Widget.name",
        (
            "tests.testapp.models.Widget.name "
            "(class 'django.db.models.query_utils.DeferredAttribute') is not a callable object"
        ),
    ),
    ("tests.testapp.jobs.wrong_name", "Task function must have one parameter, named 'message'"),
    (
        "tests.testapp.jobs.two_params",
        "Improper signature for task function (needs only 'message')",
    ),
    ("tests.testapp.jobs.no_params", "Improper signature for task function (needs only 'message')"),
    (
        "tests.testapp.models.Widget.touch",
        "Can't call instance method without an instance! (Try sisy.models.task_with_callable)",
    ),
    (
        "tests.testapp.models.Widget.two_params",
        "Improper signature for task function (needs only 'message')",
    ),
    (
        "tests.testapp.jobs.Things.plain_instance_job",
        (
            "Can only call instance methods of Django model objects, "
            "not tests.testapp.jobs.Things.plain_instance_job."
        ),
    ),
]


@pytest.mark.parametrize("name", SISY_NAMES)
def test_every_public_name_of_sisy_models_is_served_by_both_modules(name):
    assert name in sisy.models.__all__
    assert getattr(sisy.models, name) is getattr(sisy_pg.models, name)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests.testapp.jobs.record", jobs.record),
        ("tests.testapp.jobs.Things.class_job", jobs.Things.class_job),
        ("tests.testapp.jobs.Things.static_job", jobs.Things.static_job),
    ],
)
def test_func_from_string_and_get_module_member_by_dottedpath(path, expected):
    assert func_from_string(path) == expected
    assert get_module_member_by_dottedpath(path) == expected


def test_get_module_member_by_dottedpath_returns_any_member():
    assert get_module_member_by_dottedpath("tests.testapp.jobs.NOT_CALLABLE") == 42
    assert get_module_member_by_dottedpath("tests.testapp.jobs.Things") is jobs.Things
    assert get_module_member_by_dottedpath("tests.testapp.models.Widget.touch") is Widget.touch


def test_func_from_string_consults_no_allowlist(monkeypatch):
    """It returns the object to its caller, neither stores nor calls it (as Sisy's)."""
    import tests

    with pytest.raises(ValueError, match=r"^refused: "):
        funcinfo_from_string("tests.forbidden_jobs.job")
    assert "tests.forbidden_jobs" not in sys.modules
    # Imported here: forgotten afterwards, for the tests that check nothing imports it.
    monkeypatch.setitem(sys.modules, "tests.forbidden_jobs", None)
    monkeypatch.delitem(sys.modules, "tests.forbidden_jobs")
    monkeypatch.setattr(tests, "forbidden_jobs", None, raising=False)
    monkeypatch.delattr(tests, "forbidden_jobs")
    assert func_from_string("tests.forbidden_jobs.job").__module__ == "tests.forbidden_jobs"


@pytest.mark.parametrize(("path", "message"), SISY_REFUSALS)
def test_sisy_helpers_refuse_with_sisys_messages(path, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        func_from_string(path)
    if path.startswith("tests.testapp."):  # allowed: the describing helpers say the same
        for helper in (funcinfo_from_string, get_func_info):
            with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
                helper(path)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.testapp.jobs.wrong_name", "(it takes: msg)"),
        ("tests.testapp.models.Widget.touch", "pass pk_override="),
        ("tests.testapp.jobs.NOT_CALLABLE", "is not callable (it is int)"),
    ],
)
def test_sisy_pg_api_keeps_its_own_messages(path, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        task_with_callable(path)


def test_sisy_helpers_refuse_what_sisy_accepted_but_the_worker_would_not_call():
    """Sisy followed any attribute: these say why the rule refuses them."""
    with pytest.raises(ValueError, match="is nested too deep"):
        func_from_string("tests.testapp.models.uuid.os.system")
    with pytest.raises(ValueError, match="is not a class"):
        func_from_string("tests.testapp.jobs.__builtins__.update")


@pytest.mark.parametrize(
    ("helper", "argument", "message"),
    [
        (func_from_string, "not a path", "is not a dotted path"),
        (func_from_string, 42, "path must be a dotted string, not int"),
        (
            get_module_member_by_dottedpath,
            "tests.testapp.jobs.Things.gone",
            "has no attribute 'gone'",
        ),
        (funcinfo_from_string, jobs.record, "dotted_path must be a string, not function"),
        (get_func_info, jobs.Things, "Cannot call class directly"),
        (get_func_info, jobs, "Cannot call module directly"),
    ],
)
def test_helpers_raise_value_error_naming_the_problem(helper, argument, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        helper(argument)


def test_get_member():
    assert get_member(jobs, "record") is jobs.record
    assert get_member(jobs.Things, "class_job") == jobs.Things.class_job
    with pytest.raises(
        ValueError, match=re.escape("'tests.testapp.jobs.Things' has no attribute 'nope'")
    ):
        get_member(jobs.Things, "nope")
