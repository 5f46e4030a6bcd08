"""Workers behind a real PgBouncer (Debian's, started by devtools.pgbouncer).

- Transaction pooling drops LISTEN/NOTIFY without an error: a worker must
  say so (a WARNING naming the pooler and the fix, action
  ``notifications_lost``) and still run the tasks, by polling.
- With the documented setup (a second alias ``direct`` to PostgreSQL itself,
  ``SISY_LISTEN_DATABASE = "direct"``, no prepared statements), every-second
  tasks run on time through the pooler, as they do in session pooling.
- Session pooling gives each client connection a server connection of its
  own: a worker needs the number of connections docs/operations.md gives as
  a formula, measured here against a pool of exactly that size.

Skipped, saying why, where pgbouncer cannot be had (apt-get install pgbouncer).
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from devtools.embedded_pg import with_database
from devtools.pgbouncer import PgBouncer, unavailable_reason
from sisy_pg.conf import settings as sisy_settings
from sisy_pg.models import Task, TaskRun, task_with_callable
from tests.e2e.helpers import Worker, every_second_tasks, instants_in
from tests.helpers import wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.long  # the pooler is the same whatever the Django version

TASKS = 5  # every-second tasks of the lag measurements
MEASURE = 20.0  # seconds of instants measured (5 tasks: 100 instants)
WARNING_WITHIN = 10.0  # seconds after its start by which a worker says notifications are lost
PROCRASTINATE_POOL = 4  # psycopg_pool's default min_size = max_size, as procrastinate opens it


def server_connections_per_worker(concurrency: int) -> int:
    """The formula of docs/operations.md#connection-poolers: server connections of one worker.

    procrastinate's pool, its job LISTEN connection, the planner's two, the
    runners' pool (at most 8), one per callable thread that uses the ORM.
    """
    return PROCRASTINATE_POOL + 1 + 2 + min(concurrency, 8) + concurrency


# --- fixtures and helpers --------------------------------------------------------------


@pytest.fixture
def pgbouncer() -> Iterator[Callable[..., PgBouncer]]:
    """Start PgBouncers in front of the test server; stopped after the test (and its workers)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"NO PGBOUNCER, the pooler tests are SKIPPED: {reason}")
    started: list[PgBouncer] = []

    def start(pool_mode: str, **options: Any) -> PgBouncer:
        bouncer = PgBouncer(os.environ["DATABASE_URL"], pool_mode=pool_mode, **options)
        started.append(bouncer)
        bouncer.start()
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()


@pytest.fixture
def pooled_worker(pgbouncer, start_worker):
    """Start a worker whose database is ``bouncer``'s; with ``direct``, the documented setup.

    Set up after ``pgbouncer`` (it depends on it), so its workers stop before their PgBouncer.
    """

    def start(bouncer: PgBouncer, name: str, *args: str, direct: bool = False) -> Worker:
        dbname = connection.settings_dict["NAME"]
        env = {
            "DJANGO_SETTINGS_MODULE": "tests.pgbouncer_settings",
            "DATABASE_URL": bouncer.url(dbname),
        }
        if direct:
            env["SISY_TEST_DIRECT_URL"] = with_database(os.environ["DATABASE_URL"], dbname)
        worker: Worker = start_worker(name, *args, env=env)
        return worker

    return start


def window_report(tasks: list[Task], start: dt.datetime, end: dt.datetime) -> dict:
    """What the history of ``tasks`` says about the instants of [start, end).

    ``unrecorded`` lists the instants without a row (a missed row covers its
    range, through ``details.through``); ``lags`` are those of the runs that
    started, in seconds.
    """
    expected = instants_in(start, end)
    rows = list(
        TaskRun.objects.filter(
            task__in=tasks,
            scheduled_for__gte=start - dt.timedelta(minutes=5),
            scheduled_for__lt=end,
        )
    )
    covered: dict[int, set[dt.datetime]] = collections.defaultdict(set)
    statuses: collections.Counter[str] = collections.Counter()
    lags = []
    for run in rows:
        through = run.details.get("through") if run.status == "missed" else None
        last = dt.datetime.fromisoformat(through) if through else run.scheduled_for
        covered[run.task_id].update(i for i in expected if run.scheduled_for <= i <= last)
        if start <= run.scheduled_for < end:
            statuses[run.status] += 1
            if run.started_at is not None:
                lags.append(run.lag.total_seconds())
    unrecorded = [(t.pk, i) for t in tasks for i in expected if i not in covered[t.pk]]
    return {
        "instants": len(expected) * len(tasks),
        "statuses": dict(statuses),
        "lags": sorted(lags),
        "unrecorded": unrecorded,
    }


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def figures(report: dict) -> str:
    lags = report["lags"]
    if not lags:
        return f"{report['instants']} instants, none started: {report['statuses']}"
    return (
        f"{report['instants']} instants: {report['statuses']}; lag of the "
        f"{len(lags)} started: p50 {statistics.median(lags) * 1000:.1f} ms, "
        f"p99 {percentile(lags, 0.99) * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms"
    )


def measure(tasks: list[Task], seconds: float = MEASURE) -> dict:
    """The history of the instants of the next ``seconds`` s, once their runs have ended."""
    start = timezone.now()
    end = start + dt.timedelta(seconds=seconds)
    time.sleep(seconds)
    unfinished = TaskRun.objects.filter(
        task__in=tasks, scheduled_for__lt=end, status__in=("queued", "running")
    )
    deadline = time.monotonic() + 15
    while unfinished.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return window_report(tasks, start, end)


LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"\[(?P<action>[^\]]*)\] (?P<message>.*)$"
)


def log_records(output: str, action: str) -> list[re.Match[str]]:
    """The records of ``action`` in a worker's output (tests.pgbouncer_settings' format)."""
    return [
        match
        for line in output.splitlines()
        if (match := LOG_LINE.match(line)) and match["action"] == action
    ]


def logged_at(record: re.Match[str]) -> dt.datetime:
    return dt.datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f")


# --- transaction pooling ---------------------------------------------------------------


@pytest.mark.long
def test_transaction_pooling_without_a_direct_connection_warns_and_still_runs(
    pgbouncer, pooled_worker
):
    """The notifications are lost: each worker says so, naming the cause and the fix, and polls."""
    bouncer = pgbouncer("transaction")
    tasks = every_second_tasks(TASKS)
    workers = []
    for name in ("w1", "w2"):
        started = time.monotonic()
        worker = pooled_worker(bouncer, name)
        worker.expect_notifications_lost = True  # what this test is about
        workers.append(worker)
        print(f"worker {name} ready (it ran a one-off task) in {time.monotonic() - started:.1f} s")
    report = measure(tasks)
    print(f"transaction pooling, no direct connection: {figures(report)}")
    outputs = "\n\n".join(worker.output()[-3000:] for worker in workers)

    for worker in workers:
        output = worker.output()
        warnings = log_records(output, "notifications_lost")
        assert warnings, f"no notifications_lost record:\n{output[-3000:]}"
        warning = warnings[0]
        assert warning["level"] == "WARNING", warning[0]
        # The cause and the fix, in words.
        assert re.search(r"pooler|pgbouncer", warning["message"], re.I), warning[0]
        assert "SISY_LISTEN_DATABASE" in warning["message"], warning[0]
        # Soon after the worker started (the probe at start).
        start = logged_at(log_records(output, "planner_start")[0])
        assert logged_at(warning) - start <= dt.timedelta(seconds=WARNING_WITHIN), (
            warning[0],
            output[-3000:],
        )
    assert not report["unrecorded"], (figures(report), report["unrecorded"][:20])
    # The tasks still run, by polling: most instants run, about a poll late at
    # most (procrastinate's own poll, 5 s in tests/settings.py, made them 4 s late).
    executed = report["statuses"].get("succeeded", 0)
    assert executed >= 0.8 * report["instants"], (figures(report), outputs)
    polled = sisy_settings.POLL_INTERVAL + 0.5
    assert statistics.median(report["lags"]) < polled, (figures(report), outputs)


@pytest.mark.long
@pytest.mark.parametrize(
    ("pool_mode", "direct"),
    [("transaction", True), ("session", False)],
    ids=["transaction-with-direct-listen", "session"],
)
def test_every_second_tasks_run_on_time_through_pgbouncer(
    pgbouncer, pooled_worker, pool_mode, direct
):
    """Transaction pooling with the documented setup, or session pooling: lag p99 <= 100 ms."""
    bouncer = pgbouncer(pool_mode, pool_size=60)
    tasks = every_second_tasks(TASKS)
    workers = [pooled_worker(bouncer, name, direct=direct) for name in ("w1", "w2")]
    time.sleep(2)  # past the instants due while the second worker started
    transactions_before = pooled_transactions(bouncer)
    report = measure(tasks)
    print(f"{pool_mode} pooling{' + direct LISTEN' if direct else ''}: {figures(report)}")
    outputs = "\n\n".join(worker.output()[-3000:] for worker in workers)

    for worker in workers:
        assert not log_records(worker.output(), "notifications_lost"), worker.output()
    assert not report["unrecorded"], (figures(report), report["unrecorded"][:20])
    # Every instant ran, once.
    assert report["statuses"] == {"succeeded": report["instants"]}, (figures(report), outputs)
    assert percentile(report["lags"], 0.99) <= 0.100, (figures(report), outputs)
    # The jobs and the runs went through the pooler.
    assert pooled_transactions(bouncer) > transactions_before + report["instants"]


def pooled_transactions(bouncer: PgBouncer) -> int:
    """Transactions PgBouncer has carried to the test database."""
    dbname = connection.settings_dict["NAME"]
    return sum(
        row["total_xact_count"] for row in bouncer.admin("SHOW STATS") if row["database"] == dbname
    )


# --- session pooling: sizing ------------------------------------------------------------


def clients_by_application(bouncer: PgBouncer, dbname: str) -> collections.Counter[str]:
    return collections.Counter(
        row["application_name"]
        for row in bouncer.admin("SHOW CLIENTS")
        if row["database"] == dbname
    )


@pytest.mark.parametrize("concurrency", [4, 10])
def test_session_pooling_needs_the_documented_connections_per_worker(
    pgbouncer, pooled_worker, concurrency
):
    """A worker through session pooling, against a pool of exactly the formula's size.

    ``concurrency`` tasks whose callables hold an ORM connection for 2 s fire
    together; the worker's client connections (each one a server connection
    in session pooling) are counted by ``application_name`` while they run.
    The formula is enough (no client waits for long, every run ends) and not
    loose (each part is reached).
    """
    needed = server_connections_per_worker(concurrency)
    bouncer = pgbouncer("session", pool_size=needed)
    dbname = connection.settings_dict["NAME"]
    tasks = [
        task_with_callable(jobs.slow, label=f"holds a connection {n}", schedule="* * * * * */4")
        for n in range(concurrency)
    ]
    for task in tasks:
        task.userdata = {"seconds": 2}
        task.options = {"overlap": "skip"}
        task.save()
    worker = pooled_worker(bouncer, "w1", "--concurrency", str(concurrency))

    peaks: collections.Counter[str] = collections.Counter()
    peak_total = 0
    longest_wait = 0.0
    deadline = time.monotonic() + 14
    while time.monotonic() < deadline:
        clients = clients_by_application(bouncer, dbname)
        for name, count in clients.items():
            peaks[name] = max(peaks[name], count)
        peak_total = max(peak_total, sum(clients.values()))
        pools = [row for row in bouncer.admin("SHOW POOLS") if row["database"] == dbname]
        longest_wait = max(
            [longest_wait, *(row["maxwait"] + row["maxwait_us"] / 1e6 for row in pools)]
        )
        time.sleep(0.05)
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(enabled=False)
    wait_until(
        lambda: not TaskRun.objects.filter(task__in=tasks, status="running").exists(),
        timeout=15,
        interval=0.1,
    )
    statuses = collections.Counter(
        TaskRun.objects.filter(task__in=tasks).values_list("status", flat=True)
    )
    measured = (
        f"concurrency {concurrency}: formula {needed}, peak {peak_total} client connections "
        f"{dict(peaks)}; longest wait for a server connection {longest_wait:.3f} s; "
        f"runs {dict(statuses)}"
    )
    print(measured)

    # A client may wait the moment it takes PgBouncer to reset a server
    # connection given back (Django closes a callable's connection after each
    # run); a dry pool makes it wait until a client disconnects: runs stuck.
    assert longest_wait < 1.0, (measured, worker.output()[-3000:])
    assert statuses.get("succeeded", 0) >= 2 * concurrency, (measured, worker.output()[-3000:])
    assert set(statuses) <= {"succeeded", "skipped", "cancelled"}, measured
    assert peak_total <= needed, measured
    assert peaks["sisy-planner"] == 2, measured
    assert peaks["sisy-runner"] <= min(concurrency, 8), measured
    # procrastinate's pool and LISTEN connection, and the callables' Django
    # connections, have no application_name.
    assert peaks[""] == PROCRASTINATE_POOL + 1 + concurrency, measured
