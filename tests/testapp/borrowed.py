"""Objects this allowed module holds but does not define, and what it may hold.

A task may name a function or class where it is defined, under
SISY_ALLOWED_CALLABLES: not one imported here from elsewhere, nor an alias.
"""

import posixpath
from json import dumps  # noqa: F401 (a function of the standard library)

from django.db.models import F  # noqa: F401 (a class of Django)

from . import jobs
from .jobs import record  # noqa: F401 (defined in tests.testapp.jobs, allowed too)

alias_of_record = jobs.record


class Borrowing:
    basename = staticmethod(posixpath.basename)  # posixpath.basename, a Python function


class Base:
    @classmethod
    def inherited_job(cls, message):
        pass


class Child(Base):
    """Inherits ``inherited_job`` from a class defined under an allowed prefix: allowed."""


def generator(message):  # refused: calling it would not run its body
    yield
