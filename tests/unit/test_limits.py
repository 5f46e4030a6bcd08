"""Bounded input (sisy_pg/limits.py) in Python alone: the check, the settings' bounds, printable labels."""

import pytest
from django.core import checks
from django.test import override_settings

from sisy_pg import limits
from sisy_pg.checks import check_settings
from tests.helpers import nested


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JSON_MAX_DEPTH", 33),
        ("JSON_MAX_DEPTH", 0),
        ("JSON_MAX_BYTES", 2**21),
        ("JSON_MAX_BYTES", True),
    ],
)
def test_a_limit_above_the_database_s_is_a_system_check_error(name, value):
    with override_settings(**{f"SISY_{name}": value}):
        errors = [m for m in check_settings() if m.id == "sisy.E008"]
    assert len(errors) == 1 and errors[0].level == checks.ERROR
    assert f"SISY_{name} must be a whole number from 1 to" in errors[0].msg


def test_the_check_never_recurses():
    deep = nested(100_000)  # would exhaust the stack of any recursive check
    assert "nested more than 32 levels" in limits.json_error("userdata", deep)
    cyclic: dict = {}
    cyclic["self"] = cyclic
    assert "nested more than 32 levels" in limits.json_error("userdata", cyclic)
    assert "lone surrogate" in limits.json_error("userdata", {"x": "\ud800"})
    assert "NUL" in limits.json_error("options", {"deep": [[["a\x00"]]]})


def test_printable_escapes_what_a_terminal_would_obey():
    assert limits.printable("ok\n 99  forged\x1b[31m") == "ok\\n 99  forged\\x1b[31m"
    assert "\n" not in limits.printable("a\u2028b\u202ec")
