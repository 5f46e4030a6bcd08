"""Sisy 1.0b3's own test module, its ``sisy/tests.py``, run verbatim against our ``sisy.models``.

Its wheel is fetched from the package index with pip, once, into build/
(pinned by its hash: it is code this test runs), and ``sisy/tests.py`` is
imported from it as it is: its ``from sisy.models import func_from_string,
Task`` gets sisy-pg's. pytest collects its TestCase classes here; they are
Django TestCases, run against the real test database. Without the package
index the module is skipped, saying so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "sisy-1.0b3"
WHEEL = CACHE / "sisy-1.0b3-py3-none-any.whl"
WHEEL_SHA256 = "01d242f0e98a73c75ec91a8e1a1e94333465bb527198869507076f894337384e"
MODULE_NAME = "sisy_1_0b3_tests"


def _wheel() -> Path:
    """Sisy 1.0b3's wheel, downloaded once and checked against its hash."""
    if not WHEEL.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        # Two sessions may collect this at once (CI's lanes): each downloads into a folder of
        # its own and moves the wheel into place whole.
        download = Path(tempfile.mkdtemp(dir=CACHE))
        requirement = download / "requirement.txt"
        requirement.write_text(f"sisy==1.0b3 --hash=sha256:{WHEEL_SHA256}\n")
        command = [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"),
            *("--require-hashes", "-r", str(requirement), "-d", str(download)),
            *("--quiet", "--disable-pip-version-check", "--timeout", "20"),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=180)
            os.replace(download / WHEEL.name, WHEEL)
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or exc.stdout or "").strip().splitlines()
            pytest.skip(
                "Sisy 1.0b3's wheel could not be had from the package index (pip download: "
                f"{said[-1] if said else f'exit status {exc.returncode}'})",
                allow_module_level=True,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(
                "Sisy 1.0b3's wheel could not be had: the package index did not answer in 180 s",
                allow_module_level=True,
            )
        finally:
            shutil.rmtree(download, ignore_errors=True)
    digest = hashlib.sha256(WHEEL.read_bytes()).hexdigest()
    assert digest == WHEEL_SHA256, f"{WHEEL} is not Sisy 1.0b3's wheel (sha256 {digest})"
    return WHEEL


def _sisy_tests() -> object:
    """Sisy's sisy/tests.py, imported unchanged (as module ``sisy_1_0b3_tests``)."""
    source = CACHE / f"{MODULE_NAME}.py"
    with zipfile.ZipFile(_wheel()) as wheel:
        # Written aside, then moved into place whole: a session collecting at the same time
        # never imports half a file.
        partial = source.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(wheel.read("sisy/tests.py"))
        os.replace(partial, source)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_module = _sisy_tests()
SISY_TEST_CASES = [
    case
    for case in vars(_module).values()
    if isinstance(case, type)
    and issubclass(case, unittest.TestCase)
    and case.__module__ == MODULE_NAME
]
# For pytest to collect and run, under their own names.
globals().update({case.__name__: case for case in SISY_TEST_CASES})


def test_sisy_s_tests_are_all_here():
    """Its one TestCase, with its eight tests of func_from_string, is what pytest runs here."""
    loader = unittest.TestLoader()
    names = {case.__name__: loader.getTestCaseNames(case) for case in SISY_TEST_CASES}
    assert list(names) == ["TestFuncFromString"]
    assert len(names["TestFuncFromString"]) == 8, names
