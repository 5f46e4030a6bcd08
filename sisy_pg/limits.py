"""Bounds on what a task row may hold, and safe reading of rows written before them.

``userdata`` and ``options`` (and the stored ``callable_info``) are JSON
documents. Python's JSON parser and encoder recurse, so a document nested a
few thousand levels deep (raw SQL can write one) raises ``RecursionError``
wherever it is read; a huge one makes every page that shows it slow. Every
layer keeps them within the same bounds:

- Python (``save()``, ``bulk_create``, ``task_with_callable``, the admin's
  form): :func:`json_error`, with the limits of SISY_JSON_MAX_DEPTH and
  SISY_JSON_MAX_BYTES, which may lower (never raise) the hard limits below;
- PostgreSQL: the CHECK constraints of ``sisy_task`` call
  ``sisy_json_limits_error_v1`` (sql/schema.sql), written with the hard
  limits: a test keeps the two equal;
- reading: the models' JSON fields decode with :class:`JSONDecoder`, which
  turns a document too deep for Python into an :class:`UnreadableJSON`
  instead of raising, so that the admin, ``manage.py sisy`` and the planner
  can show or skip such a row; the worker never starts a run of a task
  beyond the limits (``sisy_start_run_v1`` marks it broken).
"""

from __future__ import annotations

import json
import unicodedata
from decimal import Decimal
from typing import Any

#: Deepest nesting of objects and arrays a document may have (``{}`` is 1,
#: ``{"a": [1]}`` is 2): what sisy_json_limits_error_v1 allows.
HARD_MAX_DEPTH = 32
#: Largest document, in bytes of its JSON text as PostgreSQL writes it
#: (``octet_length(document::text)``; 1 MiB): what sisy_json_limits_error_v1 allows.
HARD_MAX_BYTES = 1024 * 1024
#: The most digits a number may have before its decimal point: Python reads at most
#: 4,300 (``sys.get_int_max_str_digits()``), and PostgreSQL's jsonb stores far more.
HARD_MAX_DIGITS = 4000
_TOO_LONG = 10**HARD_MAX_DIGITS
#: The largest value of an ``integer`` column (iterations, fire_count).
INTEGER_MAX = 2**31 - 1
#: The largest value of a ``bigint`` column (ids).
BIGINT_MAX = 2**63 - 1


class UnreadableJSON:
    """A stored JSON document Python's parser cannot read (nested too deep, or a number
    too long for it).

    What the models' JSON fields hold instead of raising ``RecursionError``:
    its text is kept (the admin shows it), it is never taken for data, and
    ``save()`` refuses it, naming the field.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return (
            f"<unreadable JSON: {len(self.text)} characters nested too deep to read, or with "
            "a number too long; "
            "replace it with a document within the limits>"
        )

    __repr__ = __str__


class JSONDecoder(json.JSONDecoder):
    """Django's JSON decoding, but a document Python cannot parse becomes an UnreadableJSON.

    Too deep for its parser (``RecursionError``), or holding an integer of more
    digits than Python converts (``ValueError``): PostgreSQL's jsonb takes both.
    """

    def decode(self, s: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(s, *args, **kwargs)
        except (RecursionError, ValueError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                raise  # not JSON at all: not what a jsonb column holds
            return UnreadableJSON(s)


_DECODER = JSONDecoder()


def loads(text: str | bytes) -> Any:
    """``json.loads`` with :class:`JSONDecoder` (for psycopg connections' loaders)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode()
    return _DECODER.decode(text)


def max_depth() -> int:
    """SISY_JSON_MAX_DEPTH, at most the hard limit."""
    from . import conf

    return min(int(conf.settings.JSON_MAX_DEPTH), HARD_MAX_DEPTH)


def max_bytes() -> int:
    """SISY_JSON_MAX_BYTES, at most the hard limit."""
    from . import conf

    return min(int(conf.settings.JSON_MAX_BYTES), HARD_MAX_BYTES)


def _text_size_correction(number: float) -> int:
    """How much longer PostgreSQL writes a float than Python's json does (``1e-07``)."""
    written = float.__repr__(number)
    if "e" not in written:
        return 0
    return len(format(Decimal(written), "f")) - len(written)


def json_error(name: str, value: Any, *, settings: bool = True) -> str | None:
    """Why JSON ``value`` (field ``name``) cannot be stored, or None.

    Too deep, too big, a number of more than HARD_MAX_DIGITS digits, NUL
    characters (PostgreSQL's jsonb has none), lone surrogates, NaN, or not
    JSON at all. The nesting is walked without
    recursion, so no document can exhaust the stack, and the walk stops at
    the first level too deep; the size is that of the JSON text PostgreSQL
    will write (it prints floats in full: ``1e-07`` is ``0.0000001``).
    ``settings=False`` checks the hard limits alone (the database's), not the
    settings' lower ones: for a document users do not write, the callable's.
    """
    if isinstance(value, UnreadableJSON):
        return (
            f"{name} as stored cannot be read: it is nested deeper than "
            f"{max_depth()} levels, or holds a number of more than {HARD_MAX_DIGITS} digits "
            "(the limits); replace it"
        )
    depth_limit, size_limit = (
        (max_depth(), max_bytes()) if settings else (HARD_MAX_DEPTH, HARD_MAX_BYTES)
    )
    correction = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return (
                    f"{name} must not contain the NUL character (\\u0000): "
                    "PostgreSQL cannot store it"
                )
            continue
        if isinstance(item, float):
            correction += _text_size_correction(item)
            continue
        if isinstance(item, int) and not -_TOO_LONG < item < _TOO_LONG:
            return (
                f"{name} holds a number of more than {HARD_MAX_DIGITS} digits; "
                "Python cannot read it back"
            )
        if isinstance(item, dict):
            children: list[Any] = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            children = list(item)
        else:
            continue
        if depth + 1 > depth_limit:
            return (
                f"{name} is nested more than {depth_limit} levels deep "
                f"(objects and arrays); at most {depth_limit} are allowed"
            )
        stack.extend((child, depth + 1) for child in children)
    try:
        # What the column will hold; PostgreSQL's jsonb has no NaN or Infinity.
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8")) + correction
    except UnicodeEncodeError as exc:
        return f"{name} must be valid Unicode text: {exc.reason} (a lone surrogate?)"
    except (TypeError, ValueError) as exc:
        return (
            f"{name} must be JSON-serialisable (dicts, lists, strings, finite numbers, "
            f"booleans, None): {exc}"
        )
    if size > size_limit:
        return f"{name} is {size} bytes of JSON; at most {size_limit} are allowed"
    return None


def control_characters(text: str) -> list[str]:
    """The control characters (Unicode category Cc) in ``text``, in order, once each."""
    return list(dict.fromkeys(c for c in text if unicodedata.category(c) == "Cc"))


def printable(text: str) -> str:
    """``text`` with every character a terminal or a log would not show as such escaped.

    For labels written before they were refused control characters: a
    newline or an ANSI escape is shown as ``\\n``, ``\\x1b``, never obeyed,
    so that a label cannot forge a line of ``manage.py sisy list`` or a log.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
