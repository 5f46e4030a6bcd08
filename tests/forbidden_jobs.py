"""A module outside SISY_ALLOWED_CALLABLES (``tests.testapp`` is allowed, ``tests`` is not).

Importing it leaves a mark: the file named by $SISY_FORBIDDEN_IMPORT_MARKER gets
a line. The tests check that neither a form, nor ``save()``, nor a worker
imports it.
"""

import os
from pathlib import Path

_marker = os.environ.get("SISY_FORBIDDEN_IMPORT_MARKER")
if _marker:
    with Path(_marker).open("a") as marker:
        marker.write(f"imported by process {os.getpid()}\n")


def job(message):
    """Would be a perfectly good task callable, if it were allowed."""
