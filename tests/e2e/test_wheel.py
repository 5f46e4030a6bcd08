"""The wheel, installed in a fresh virtualenv, runs a project on its own: no source checkout.

Builds the wheel with pip (hatchling from the package index), checks what it
carries, installs it with ``psycopg[binary]`` into a new virtualenv of the
interpreter running the tests (pip resolves Django, procrastinate and croniter:
no version pinned, so each CI interpreter gets the newest Django it supports),
then, with that virtualenv's Python and the repository root NOT on ``sys.path``:

- ``sisy_pg`` and its SQL files come from the virtualenv (``sisy_pg/sql/``);
- the demo project (Sisy's documented seed migrations) migrates, a stock
  ``procrastinate worker`` runs its tasks, and the migrations unapply.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devtools import processes
from devtools.databases import query
from devtools.workers import ROOT
from sisy_pg import sql_files
from tests.helpers import wait_until

DEMO = ROOT / "demo"
DEMO_TASKS = {
    "Daily data maintenance",
    "Heartbeat every 2 seconds",
    "Digest every 5 seconds",
    "A suitably unique label for the task",
}
WHEEL_FILES = [
    "sisy_pg/__init__.py",
    "sisy_pg/migrations/0001_initial.py",
    "sisy_pg/migrations/0002_operator_names.py",
    "sisy_pg/sql/schema.sql",
    "sisy_pg/sql/queries.sql",
    "sisy_pg/sql/roles.sql",
    "sisy_pg/sql/migrations/0001_initial.sql",
    "sisy_pg/sql/migrations/0001_initial.reverse.sql",
    "sisy_pg/sql/migrations/0002_operator_names.sql",
    "sisy_pg/sql/migrations/0002_operator_names.reverse.sql",
    "sisy_pg/py.typed",
    "sisy/__init__.py",
    "sisy/models.py",
]

# demo_project.settings takes its database from devtools.embedded_pg, which is
# not in the wheel; these are its settings with DATABASE_URL as given.
SETTINGS = """
import os

from psycopg.conninfo import conninfo_to_dict

_params = conninfo_to_dict(os.environ["DATABASE_URL"])
SECRET_KEY = "wheel-test-only"
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "demo_project.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.pop("dbname", "postgres"),
        "USER": _params.pop("user", ""),
        "PASSWORD": _params.pop("password", ""),
        "HOST": _params.pop("host", ""),
        "PORT": _params.pop("port", ""),
        "OPTIONS": _params,
    }
}
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "procrastinate.contrib.django",
    "sisy_pg",
    "myapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"sisy_pg": {"level": "INFO"}},
}
"""

# Where the installed package and its SQL files are, and what SQL it finds.
WHERE_FROM = """
import json, sisy, sisy_pg, sisy_pg.sql_files as f
print(json.dumps([
    sisy_pg.__file__, sisy.__file__, str(f.directory()), f.migration_names(), sorted(f.queries())
]))
"""


def run(args: list[str], *, timeout: float = 300, **kwargs) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def isolated_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would put the checkout or another venv on sys.path."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"}
    }
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the checkout, built as a user's pip builds it (hatchling from the index)."""
    wheel_dir = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(wheel_dir)],
        cwd=ROOT,
    )
    (built,) = wheel_dir.glob("sisy_pg-*.whl")
    return built


def test_the_wheel_carries_the_sql_files_the_compat_package_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in WHEEL_FILES if name not in names]
    assert not missing, f"the wheel lacks {missing}; it has {sorted(names)}"
    assert not [name for name in names if name.startswith(("tests/", "demo/", "devtools/"))]


def test_the_wheel_installs_and_runs_the_demo_project_without_the_checkout(
    wheel, tmp_path, fresh_url
):
    # A fresh virtualenv of this interpreter, with the wheel (pip finds the dependencies).
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            str(wheel),
            "psycopg[binary]",
        ],
        cwd=tmp_path,
        env=isolated_env(),
    )

    # sisy_pg and its SQL come from the virtualenv, run from outside the checkout.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    found = json.loads(
        run(
            [
                str(python),
                "-c",
                WHERE_FROM,
            ],
            cwd=outside,
            env=isolated_env(),
        )
    )
    package_file, sisy_file, sql_dir, migration_names, queries = found
    package = Path(package_file).parent
    assert package.is_relative_to(venv), package_file
    assert Path(sisy_file).is_relative_to(package.parent), sisy_file
    assert Path(sql_dir) == package / "sql", sql_dir
    assert migration_names == sql_files.migration_names()
    assert "claim_due" in queries

    # The demo project on the installed wheel: the checkout's demo/ only on sys.path.
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    (settings_dir / "wheel_demo_settings.py").write_text(SETTINGS)
    env = isolated_env(
        PYTHONPATH=os.pathsep.join([str(settings_dir), str(DEMO)]),
        DJANGO_SETTINGS_MODULE="wheel_demo_settings",
        DATABASE_URL=fresh_url,
    )

    def django(*args: str) -> str:
        return run([str(python), "-m", "django", *args], cwd=outside, env=env, timeout=120)

    django("migrate", "--no-input")
    # The project's processes import sisy_pg from the virtualenv, the demo's app from demo/.
    loaded = run(
        [
            str(python),
            "-c",
            "import django, sisy_pg; django.setup(); import myapp; print(sisy_pg.__file__)\nprint(myapp.__file__)",
        ],
        cwd=outside,
        env=env,
    ).splitlines()
    assert loaded == [package_file, str(DEMO / "myapp" / "__init__.py")], loaded
    assert {label for (label,) in query(fresh_url, "SELECT label FROM sisy_task")} == DEMO_TASKS
    assert query(fresh_url, "SELECT count(*) FROM sisy_task WHERE next_run IS NULL") == [(0,)]

    # A stock worker of the virtualenv runs the demo's tasks.
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = processes.spawn(
            [str(python), "-m", "django", "procrastinate", "worker"],
            cwd=outside,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_until(
                lambda: (
                    worker.poll() is not None
                    or query(
                        fresh_url, "SELECT count(*) FROM sisy_taskrun WHERE status = 'succeeded'"
                    )[0][0]
                ),
                timeout=60,
                interval=0.2,
            )
        except AssertionError:
            raise AssertionError(f"no run succeeded:\n{log_path.read_text()}") from None
        assert worker.poll() is None, log_path.read_text()
    finally:
        processes.stop(worker, timeout=20, signum=signal.SIGTERM)
    output = log_path.read_text(errors="replace")
    assert "sisy planner starting" in output, output
    assert "sisy planner failed" not in output, output
    assert worker.returncode == 0, output

    # Sisy's seed migrations unapply: no task, no job left to do; then sisy itself.
    django("migrate", "myapp", "0001_initial", "--no-input")
    assert query(fresh_url, "SELECT count(*) FROM sisy_task") == [(0,)]
    assert query(fresh_url, "SELECT count(*) FROM myapp_modelfoo") == [(0,)]
    assert query(fresh_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == [
        (0,)
    ]
    django("migrate", "sisy", "zero", "--no-input")
    assert (
        query(
            fresh_url,
            r"""
            SELECT relname FROM pg_class
             WHERE relname LIKE 'sisy\_%' AND relnamespace = 'public'::regnamespace
            UNION ALL
            SELECT proname FROM pg_proc
             WHERE proname LIKE 'sisy\_%' AND pronamespace = 'public'::regnamespace
            """,
        )
        == []
    )
