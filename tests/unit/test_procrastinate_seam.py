"""The seam to procrastinate: what sisy-pg relies on is there, and used nowhere else.

If an upgrade of procrastinate breaks one of these, sisy-pg must not be
released with it before sisy_pg/procrastinate_seam.py and the seam section
of sql/schema.sql are adapted.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import procrastinate
import pytest
from procrastinate import worker as procrastinate_worker

from sisy_pg import procrastinate_seam, sql_files

ROOT = Path(__file__).resolve().parents[2]
SEAM_SECTION = "-- The seam to procrastinate "
SECTION_HEADER = re.compile(r"^-- .* -{3,}$")


@pytest.mark.parametrize(
    ("owner", "name"),
    procrastinate_seam.PYTHON_REQUIREMENTS,
    ids=[f"{getattr(o, '__name__', o)}.{n}" for o, n in procrastinate_seam.PYTHON_REQUIREMENTS],
)
def test_procrastinate_has_what_the_python_seam_uses(owner, name):
    # The App's own attributes are set on the instance; JobContext's are attrs fields.
    target = procrastinate_seam.django_app() if owner is procrastinate.App else owner
    fields = getattr(owner, "__attrs_attrs__", ())
    assert hasattr(target, name) or name in {field.name for field in fields}, (
        f"procrastinate {procrastinate.__version__} has no {owner!r}.{name}: "
        "adapt sisy_pg/procrastinate_seam.py"
    )


def _lines_outside_the_seam_section(text: str) -> list[str]:
    outside, in_seam = [], False
    for line in text.splitlines():
        if SECTION_HEADER.match(line):
            in_seam = line.startswith(SEAM_SECTION)
        elif "procrastinate_" in line and not in_seam:
            outside.append(line.strip())
    return outside


def test_procrastinate_internals_are_used_in_the_seam_alone():
    offenders = []
    for path in sorted((ROOT / "sisy_pg").rglob("*.py")):
        if path.name == "procrastinate_seam.py":
            continue
        offenders += [
            f"{path.relative_to(ROOT)}: {line.strip()}"
            for line in path.read_text().splitlines()
            if "procrastinate_" in line.replace("procrastinate_seam", "")
        ]
    for path in sorted(sql_files.directory().rglob("*.sql")):
        offenders += [
            f"{path.relative_to(ROOT)}: {line}"
            for line in _lines_outside_the_seam_section(path.read_text())
        ]
    assert offenders == []


def test_the_seam_section_is_found():
    """The check above would pass vacuously if the section header changed."""
    schema = sql_files.read("schema.sql")
    assert SEAM_SECTION in schema
    assert _lines_outside_the_seam_section(schema) == []
    assert _lines_outside_the_seam_section(
        "-- Other ---\nSELECT procrastinate_defer_jobs_v1();"
    ) == ["SELECT procrastinate_defer_jobs_v1();"]


def test_worker_options_follow_procrastinate_settings_and_arguments():
    default = procrastinate_seam.worker_options(procrastinate_seam.django_app())
    assert default.queues is None
    assert default.stalled_worker_timeout > 0  # procrastinate's own default
    assert default.concurrency == 1  # procrastinate's own default
    given = procrastinate_seam.worker_options(
        procrastinate_seam.django_app(),
        queues=["a", "sisy"],
        stalled_worker_timeout=12,
        concurrency=8,
    )
    assert given == procrastinate_seam.WorkerOptions(
        queues=("a", "sisy"), stalled_worker_timeout=12.0, concurrency=8, name="worker"
    )


def test_install_is_idempotent_and_wraps_the_worker_once():
    app = procrastinate_seam.django_app()
    assert app is not None
    wrapped = app.run_worker_async
    from sisy_pg import worker

    worker.install(app)
    assert app.run_worker_async is wrapped
    assert "sisy.run" in app.tasks


def test_the_workers_listen_through_the_job_manager_the_seam_wraps():
    """keep_listening() revives the LISTEN only if workers start it from app.job_manager."""
    app = procrastinate_seam.django_app()
    assert app is not None
    assert hasattr(app.job_manager.listen_for_jobs, "__wrapped__")  # install() wrapped it
    source = inspect.getsource(procrastinate_worker.Worker)
    assert "self.app.job_manager.listen_for_jobs(" in source, (
        f"procrastinate {procrastinate.__version__}'s worker listens some other way: "
        "adapt keep_listening() in sisy_pg/procrastinate_seam.py"
    )
