"""Backfill with a real worker: past instants asked twice run once each."""

import itertools

from sisy_pg.models import task_with_callable
from tests.helpers import wait_until
from tests.integration.helpers import MINUTE, backfill_runs, past_minutes, sisy
from tests.testapp import jobs
from tests.testapp.models import Hit


def test_five_past_minutes_asked_twice_run_once_each(start_worker):
    start_worker("w1", "--concurrency", "4")
    task = task_with_callable(jobs.record, label="backfilled", schedule="* * * * *")
    task.save()
    first, last = past_minutes(5)
    span = ("--from", first.isoformat(), "--to", last.isoformat())
    assert "5 of 5 instant(s)" in sisy("backfill", "backfilled", *span)
    assert "0 of 5 instant(s)" in sisy("backfill", "backfilled", *span)
    wait_until(lambda: backfill_runs(task).filter(status="succeeded").count() == 5, timeout=30)
    assert "5 had run or will run already" in sisy("backfill", "backfilled", *span)
    hits = Hit.objects.filter(task_id=task.pk, scheduled_for__lte=last)
    assert sorted(h.scheduled_for for h in hits) == [first + n * MINUTE for n in range(5)]
    # One at a time, oldest first: each started once the one before had ended.
    runs = list(backfill_runs(task).order_by("scheduled_for"))
    assert all(a.finished_at <= b.started_at for a, b in itertools.pairwise(runs))
