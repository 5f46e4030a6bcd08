"""Every ```sql block of docs/sql.md runs, and finds something, on a database with a few tasks."""

import datetime as dt
import re
from pathlib import Path

import pytest

from sisy_pg.models import TaskRun, task_with_callable
from tests.integration.helpers import sql
from tests.testapp import jobs

pytestmark = pytest.mark.django_db

COOKBOOK = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", COOKBOOK.read_text(), flags=re.DOTALL)


def statements(block):
    """The statements of a block: each ends with a semicolon at the end of a line."""
    return [s.strip() for s in re.split(r";\s*$", block, flags=re.MULTILINE) if s.strip()]


@pytest.fixture
def tasks():
    """Tasks every query has something to say about, and their runs."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    made = {}
    for label, schedule in [
        ("Nightly cleanup", "*/5 * * * *"),
        ("Broken report", "0 * * * *"),
        ("reports:daily", "0 6 * * *"),
        ("reports:weekly", "0 6 * * 1"),
    ]:
        task = task_with_callable(jobs.record, label=label, schedule=schedule)
        task.save()
        made[label] = task
    sql("UPDATE sisy_task SET error = 'module gone' WHERE label = 'Broken report'")
    sql(
        "UPDATE sisy_task SET next_run = now() - interval '5 minutes' WHERE label = 'reports:daily'"
    )
    sql(
        "SELECT sisy_worker_seen_v1(w.worker_id, 'host:1:worker', NULL, true, 4, 0, 0, 'ok', '{}')"
        " FROM procrastinate_register_worker_v1() AS w"
    )
    cleanup = made["Nightly cleanup"]
    for minutes in range(1, 30):
        at = now - dt.timedelta(minutes=minutes)
        status = "failed" if minutes % 7 == 0 else "succeeded"
        TaskRun.objects.create(
            task=cleanup,
            scheduled_for=at,
            status=status,
            started_at=at + dt.timedelta(milliseconds=minutes * 3),
            finished_at=at + dt.timedelta(seconds=minutes / 10),
            error="ValueError: nope\nTraceback ..." if status == "failed" else "",
            details={"attempt": 1},
        )
    TaskRun.objects.create(
        task=made["reports:weekly"],
        scheduled_for=now - dt.timedelta(minutes=50),
        status="missed",
        finished_at=now - dt.timedelta(minutes=10),
        error="missed: ...",
        details={
            "reason": "missed",
            "through": (now - dt.timedelta(minutes=20)).isoformat(),
            "policy": "coalesce",
        },
    )
    return made


def test_the_cookbook_has_its_recipes():
    text = "\n".join(BLOCKS)
    for needed in (
        "sisy_pause(",
        "sisy_resume(",
        "sisy_run_now(",
        "sisy_clear_error(",
        "sisy_backfill(",
        "sisy_health(",
        "sisy_metrics(",
        "percentile_cont",
        "LIKE",
        "'missed'",
    ):
        assert needed in text, needed
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(
    "block", BLOCKS, ids=[f"block{number}" for number in range(1, len(BLOCKS) + 1)]
)
def test_every_query_runs_and_returns_rows(tasks, block):
    for statement in statements(block):
        rows = sql(statement)
        if rows is not None:
            assert rows, f"no row from:\n{statement}"
