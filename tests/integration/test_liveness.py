"""The planner says what stops the clock: stalls and their cause, lost notifications, overload.

Real PostgreSQL throughout; the planner runs in-process, as in tests/integration/test_planner.py.
"""

import asyncio
import contextlib
import inspect
import logging
import os
import uuid

import psycopg
import pytest
from django.db import connection, connections

from devtools.databases import empty_database
from sisy_pg import liveness, procrastinate_seam, worker
from sisy_pg.liveness import Load, NotificationProbe
from tests.integration.helpers import make_task, sql

pytestmark = pytest.mark.django_db(transaction=True)

# Long enough that nothing in these tests happens because a planner's safety
# net or the housekeeping period came round.
STALLED_WORKER_TIMEOUT = 600


def make_planner(wake_worker=None):
    """A planner as a worker makes it (the SISY_* settings), for an in-process test."""
    options = procrastinate_seam.WorkerOptions(
        queues=None, stalled_worker_timeout=STALLED_WORKER_TIMEOUT
    )
    return worker.make_planner(options, wake_worker)


def records(caplog, action):
    return [r for r in caplog.records if getattr(r, "action", None) == action]


async def until(predicate, timeout=30.0):
    """Wait (on the loop) until ``predicate()`` is truthy; fail after ``timeout`` s.

    ``predicate`` may return an awaitable (a query in a thread).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def in_thread(function, *args):
    """``function(*args)`` in a thread, as Django's ORM must be; its connection closed after."""

    def call():
        try:
            return function(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)


def params(alias="default"):
    return procrastinate_seam.connection_params(alias)


# --- Stalls -------------------------------------------------------------------------


def test_a_statement_waiting_on_a_lock_is_logged_once_with_who_holds_it(caplog, settings):
    caplog.set_level(logging.INFO, logger="sisy_pg")
    settings.SISY_STALL_WARNING = 0.2

    async def go():
        planner = make_planner()
        holder = await psycopg.AsyncConnection.connect(
            **params(), application_name="sisy-test-locker"
        )
        conn = await planner.store.connect()
        try:
            await holder.execute("LOCK TABLE sisy_task IN ACCESS EXCLUSIVE MODE")
            tick = asyncio.create_task(planner.tick(conn))
            await until(lambda: records(caplog, "planner_stalled"))
            # Several thresholds more: still one warning for this stall.
            await asyncio.sleep(4 * planner.stall_watch.threshold)
            assert not tick.done()
            await holder.rollback()
            await asyncio.wait_for(tick, 30)
            return holder.info.backend_pid, conn.info.backend_pid
        finally:
            await conn.close()
            await holder.close()

    holder_pid, planner_pid = asyncio.run(go())
    (stalled,) = records(caplog, "planner_stalled")
    assert stalled.levelno == logging.WARNING
    assert (stalled.step, stalled.cause, stalled.backend_pid) == ("claim", "lock", planner_pid)
    (blocker,) = stalled.blockers
    assert blocker["pid"] == holder_pid
    assert blocker["application_name"] == "sisy-test-locker"
    assert blocker["state"] == "idle in transaction"
    assert blocker["query"] == "LOCK TABLE sisy_task IN ACCESS EXCLUSIVE MODE"
    assert blocker["seconds"] >= stalled.waited_seconds - 1
    message = stalled.getMessage()
    assert message.startswith("sisy planner stalled: its claim statement has not returned after")
    assert (
        f"it waits for a lock held by pid {holder_pid} (sisy-test-locker, idle in transaction"
        in (message)
    )
    assert "'LOCK TABLE sisy_task IN ACCESS EXCLUSIVE MODE'" in message
    (resumed,) = records(caplog, "planner_resumed")
    assert resumed.levelno == logging.INFO and resumed.step == "claim"
    assert resumed.stalled_seconds >= stalled.waited_seconds
    assert resumed.getMessage().startswith(
        "sisy planner resumed: its claim statement returned after"
    )
    assert caplog.records.index(stalled) < caplog.records.index(resumed)


def test_statements_that_return_in_time_log_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="sisy_pg")

    async def go():
        planner = make_planner()
        conn = await planner.store.connect()
        try:
            for _ in range(3):
                await planner.tick(conn)
        finally:
            await conn.close()

    asyncio.run(go())
    assert not records(caplog, "planner_stalled") and not records(caplog, "planner_resumed")


def test_a_stall_without_a_blocker_says_what_the_server_does():
    async def go():
        planner = make_planner()
        conn = await planner.store.connect()
        pid = conn.info.backend_pid
        try:
            sleeping = asyncio.create_task(conn.execute("SELECT pg_sleep(30)"))
            await asyncio.sleep(0.3)
            running = await liveness.diagnose(planner.store, pid)
            # Its backend ended (waited for), the client not told yet.
            await in_thread(sql, "SELECT pg_terminate_backend(%s, 10000)", [pid])
            gone = await liveness.diagnose(planner.store, pid)
            await asyncio.gather(sleeping, return_exceptions=True)
        finally:
            await conn.close()
        return running, gone

    running, gone = asyncio.run(go())
    assert running.cause == "wait" and "Timeout PgSleep" in running.text
    assert "SELECT pg_sleep(30)" in running.text and not running.blockers
    assert gone.cause == "connection_lost"
    assert "the server no longer has its connection" in gone.text


def test_a_planner_whose_connection_is_killed_says_which_and_goes_on(caplog, settings):
    caplog.set_level(logging.INFO, logger="sisy_pg")
    settings.SISY_NOTIFY_PROBE_INTERVAL = 0.2  # a statement on the query connection, soon

    def kill(listen):
        sql(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE application_name = 'sisy-planner' AND datname = current_database() "
            f"AND (query = 'LISTEN sisy_task_changed') = {listen}"
        )

    def connected():
        count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sisy-planner'"
        return sql(count)[0][0] == 2

    async def go():
        planner = make_planner()
        running = asyncio.create_task(planner.run())
        try:
            for listen in (True, False):
                await until(lambda: in_thread(connected))
                await until(lambda: planner.notifications == "ok")
                # Back from the first outage (a tick went through): a kill before that
                # would be a retry of the same outage, logged quietly.
                backs = 0 if listen else 1
                await until(lambda n=backs: len(records(caplog, "planner_back")) == n)
                await in_thread(kill, listen)
                failures = 1 if listen else 2
                await until(lambda n=failures: len(records(caplog, "planner_error")) == n)
            # Back on new connections, and probing them.
            sent = planner.probe.sent
            await until(lambda: in_thread(connected))
            await until(lambda: planner.probe.sent > sent)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    asyncio.run(go())
    listen_lost, query_lost = records(caplog, "planner_error")
    assert listen_lost.cause.startswith("its LISTEN connection was lost (")
    assert "server closed the connection unexpectedly" in listen_lost.cause
    assert query_lost.cause.startswith(
        "the server ended its connection (terminating connection due to administrator command"
    )
    assert query_lost.getMessage().startswith(
        f"sisy planner failed: {query_lost.cause}; retrying in"
    )


def test_failure_causes_are_worded_from_the_exception():
    assert liveness.failure_cause(psycopg.OperationalError("server closed the connection\nx")) == (
        "the connection to the database failed or was lost (server closed the connection)"
    )
    assert liveness.failure_cause(ConnectionError("its LISTEN connection closed")) == (
        "its LISTEN connection closed"
    )
    assert liveness.failure_cause(ValueError("bad")) == "ValueError: bad"


def test_a_read_only_database_is_named_as_such():
    with psycopg.connect(**params(), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as raised:
            conn.execute("UPDATE sisy_task SET error = error")
    assert liveness.failure_cause(raised.value).startswith(
        "the database is read-only, as after a failover"
    )


# --- Notifications --------------------------------------------------------------------


def test_probes_come_back_and_wake_no_tick(caplog):
    caplog.set_level(logging.INFO, logger="sisy_pg")

    async def go():
        planner = make_planner()
        ticks = []
        tick = planner.tick

        async def counted_tick(conn):
            ticks.append(asyncio.get_running_loop().time())
            return await tick(conn)

        planner.tick = counted_tick
        assert planner.notifications == "unknown"
        running = asyncio.create_task(planner.run())
        try:
            await until(lambda: planner.notifications == "ok")
            # Another planner's probe is no change either.
            await in_thread(
                sql, "SELECT pg_notify('sisy_task_changed', 'sisy-probe:another-planner:1')"
            )
            await asyncio.sleep(0.5)
            ticks_after_probes = len(ticks)
            await in_thread(sql, "SELECT pg_notify('sisy_task_changed', '')")
            await until(lambda: len(ticks) > ticks_after_probes)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        return ticks_after_probes

    assert asyncio.run(go()) == 1  # the first one, at start
    assert not records(caplog, "notifications_lost")


@contextlib.contextmanager
def database_alias_elsewhere():
    """A Django alias for another database of the server: notifications sent here never reach it."""
    alias = f"elsewhere_{uuid.uuid4().hex[:6]}"
    with empty_database(os.environ["DATABASE_URL"], "sisy_elsewhere") as url:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        connections.settings[alias] = {**connections.settings[connection.alias], "NAME": name}
        try:
            yield alias
        finally:
            connections[alias].close()
            del connections[alias]
            del connections.settings[alias]


def test_notifications_lost_are_said_once_and_the_planner_polls(caplog, settings):
    caplog.set_level(logging.INFO, logger="sisy_pg")
    settings.SISY_NOTIFY_PROBE_INTERVAL = 0.2

    async def go():
        woken = []

        async def wake_worker():
            woken.append(asyncio.get_running_loop().time())

        planner = make_planner(wake_worker)
        running = asyncio.create_task(planner.run())
        try:
            await until(lambda: planner.notifications == "lost")
            await until(lambda: planner.probe.sent >= 3)  # probes go on, still lost
            await until(lambda: len(woken) >= 2)  # the worker is woken on every poll
            # A changed task is planned by polling: no notification comes.
            task = await in_thread(make_task)
            await in_thread(
                sql, "UPDATE sisy_task SET schedule = '0 0 1 1 *' WHERE id = %s", [task.pk]
            )
            planned = "SELECT next_run IS NOT NULL FROM sisy_task WHERE id = %s"
            await until(lambda: in_thread(sql, planned, [task.pk]))
            return planner.notifications
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    with database_alias_elsewhere() as alias:
        settings.SISY_LISTEN_DATABASE = alias
        assert asyncio.run(go()) == "lost"
    (lost,) = records(caplog, "notifications_lost")
    assert lost.levelno == logging.WARNING
    assert lost.listen_database == alias
    assert lost.getMessage().startswith(
        "notifications do not reach sisy's LISTEN connection: a connection pooler in "
        "transaction mode (PgBouncer pool_mode=transaction) drops them. "
        f"SISY_LISTEN_DATABASE is {alias!r}: make it the alias of a direct connection, not one "
        "through the pooler (docs/operations.md#connection-poolers); meanwhile the planner "
        "polls every 0.5 s"
    )
    assert not records(caplog, "notifications_restored")


def test_a_probe_coming_back_after_a_loss_restores_notifications(caplog):
    caplog.set_level(logging.INFO, logger="sisy_pg")
    probe = NotificationProbe(60.0, poll_interval=0.5, timeout=2.0)
    first = probe.next_payload(now=0.0)
    assert probe.next_payload(now=1.0) is None  # one at a time
    probe.check(now=1.9)
    assert probe.state == "unknown"
    probe.check(now=2.0)
    assert probe.state == "lost"
    assert probe.seconds_to_next(now=2.0) == 58.0
    second = probe.next_payload(now=60.0)
    assert second != first and probe.received(second)
    assert probe.state == "ok"
    assert probe.received(first)  # a late one of ours counts too, and is no change
    assert not probe.received("")
    assert probe.received("sisy-probe:another-planner:1") and probe.state == "ok"
    lost, restored = caplog.records
    assert (lost.action, restored.action) == ("notifications_lost", "notifications_restored")
    assert lost.getMessage() == (
        "notifications do not reach sisy's LISTEN connection: a connection pooler in "
        "transaction mode (PgBouncer pool_mode=transaction) drops them. Set "
        "SISY_LISTEN_DATABASE to a direct connection's alias "
        "(docs/operations.md#connection-poolers); meanwhile the planner polls every 0.5 s "
        "(its self-addressed NOTIFY did not come back within 2 s)"
    )
    assert restored.levelno == logging.INFO


def test_wake_worker_is_awaited_after_a_claim_that_queued_runs():
    async def go():
        woken = []

        async def wake_worker():
            woken.append(True)

        planner = make_planner(wake_worker)
        conn = await planner.store.connect()
        try:
            await planner.fire_due(conn)
            before = len(woken)
            task = await in_thread(make_task, "* * * * * *")
            await in_thread(sql, "UPDATE sisy_task SET next_run = now() WHERE id = %s", [task.pk])
            fired = await planner.fire_due(conn)
            return before, fired, len(woken)
        finally:
            await conn.close()

    assert asyncio.run(go()) == (0, 1, 1)


# --- Load -----------------------------------------------------------------------------


def insert_history(task, status, reason=None, count=1, finished="now()"):
    details = "'{}'::jsonb" if reason is None else f"jsonb_build_object('reason', '{reason}')"
    sql(
        f"""INSERT INTO sisy_taskrun (task_id, scheduled_for, status, finished_at, details)
            SELECT %s, now() - make_interval(days => 400) + i * interval '1 ms', %s,
                   {finished}, {details}
              FROM generate_series(1, %s) AS i
            ON CONFLICT DO NOTHING""",
        [task.pk, status, count],
    )


def load(window="10 seconds"):
    (row,) = sql("SELECT * FROM sisy_load_v1(%s::interval)", [window])
    return Load(*row)


def test_load_counts_what_finished_in_the_window_and_what_is_overdue():
    assert load() == Load(10.0, 0, 0, 0, 0, 0.0)
    task = make_task()
    insert_history(task, "succeeded", count=3)
    insert_history(task, "failed")
    insert_history(task, "timed_out", reason="timed_out")
    insert_history(task, "skipped", reason="coalesced", count=4)
    insert_history(task, "skipped", reason="fair_share")  # a hanging task's doing, not load
    insert_history(task, "skipped", reason="backlog")
    insert_history(task, "missed", reason="missed")
    insert_history(task, "missed", reason="late")
    insert_history(task, "skipped", reason="overlap")  # the policy asked for it
    insert_history(task, "cancelled", reason="disabled")
    insert_history(task, "queued", finished="NULL")  # not dealt with yet
    insert_history(task, "succeeded", count=5, finished="now() - interval '1 minute'")
    overdue = make_task()
    late_by = sql(
        "UPDATE sisy_task SET next_run = now() - interval '30 seconds' WHERE id = %s "
        "RETURNING extract(epoch FROM now() - next_run)::float8",
        [overdue.pk],
    )[0][0]
    barely = make_task()
    sql("UPDATE sisy_task SET next_run = now() WHERE id = %s", [barely.pk])
    paused = make_task()
    sql(
        "UPDATE sisy_task SET enabled = false, next_run = now() - interval '1 hour' WHERE id = %s",
        [paused.pk],
    )
    got = load()
    assert (got.window_seconds, got.due, got.executed, got.not_run, got.overdue_tasks) == (
        10.0,
        3 + 1 + 1 + 4 + 1 + 1 + 1 + 1 + 1 + 1,
        3 + 1 + 1,
        4 + 1 + 1 + 1,
        1,
    )
    assert got.max_lag_seconds >= late_by
    assert load("2 minutes").due == got.due + 5


def test_load_reads_index_ranges_not_the_tables():
    """The function's query, planned as PL/pgSQL plans it (its variables values) and EXPLAINed."""
    task = make_task()
    insert_history(task, "succeeded", count=20_000, finished="now() - interval '1 day'")
    insert_history(task, "skipped", reason="coalesced", count=10)
    sql(
        """INSERT INTO sisy_task (label, callable_info, schedule, timezone, next_run)
           SELECT 'load ' || i, '{"func_path": "tests.testapp.jobs.record"}', '* * * * *',
                  'UTC', now() + interval '1 day'
             FROM generate_series(1, 5000) AS i"""
    )
    sql("ANALYZE sisy_task")
    sql("ANALYZE sisy_taskrun")
    ((body, now),) = sql(
        "SELECT prosrc, clock_timestamp()::text FROM pg_proc WHERE proname = 'sisy_load_v1'"
    )
    query = body[body.index("RETURN QUERY") + len("RETURN QUERY") : body.rindex("END;")]
    query = query.replace("measured_at", f"'{now}'::timestamptz").replace(
        "p_window", "interval '10 seconds'"
    )
    plan = "\n".join(line for (line,) in sql("EXPLAIN " + query.rstrip().rstrip(";")))
    assert "sisy_taskrun_finished_idx" in plan and "sisy_task_due_idx" in plan, plan
    assert "Seq Scan" not in plan and "Parallel" not in plan, plan
    assert load().due == 10


def test_overload_is_said_after_two_checks_in_a_row_and_its_end_too(caplog):
    caplog.set_level(logging.INFO, logger="sisy_pg")
    task = make_task()
    # 3 of 20 not run: more than 10 %.
    insert_history(task, "succeeded", count=17)
    insert_history(task, "skipped", reason="coalesced", count=3)

    async def both():
        planner = make_planner()
        conn = await planner.store.connect()
        try:
            await planner.housekeeping(conn, True)  # this planner does the housekeeping
            first = await planner.watch_load(conn, True)
            said_at_first = planner.overload.overloaded
            await planner.watch_load(conn, True)
            said_at_second = planner.overload.overloaded
            await in_thread(sql, "DELETE FROM sisy_taskrun")
            await planner.watch_load(conn, True)
            still = planner.overload.overloaded
            await planner.watch_load(conn, True)
            return first, said_at_first, said_at_second, still, planner.overload.overloaded
        finally:
            await conn.close()

    first, said_at_first, said_at_second, still, at_end = asyncio.run(both())
    assert first.overloaded and (first.due, first.not_run) == (20, 3)
    assert (said_at_first, said_at_second, still, at_end) == (False, True, True, False)
    (warning,) = records(caplog, "overload")
    assert warning.levelno == logging.WARNING
    assert (warning.due, warning.executed, warning.not_run) == (20, 17, 3)
    assert warning.due_per_second == 20 / warning.window_seconds
    assert warning.getMessage() == (
        f"sisy is overloaded: {20 / warning.window_seconds:.1f} instants due a second against "
        f"{17 / warning.window_seconds:.1f} executed; 3 of the 20 dealt with in the last "
        f"{warning.window_seconds:g} s not run (coalesced, missed, late, fair share, backlog); "
        "0 task(s) overdue, the earliest by 0.0 s. Add workers, raise their --concurrency, or "
        "give the tasks that must run on time a priority (their 'priority' option)"
    )
    (ended,) = records(caplog, "overload_ended")
    assert ended.levelno == logging.INFO and ended.due == 0


@pytest.mark.parametrize(
    ("load", "overloaded"),
    [
        (Load(10.0, 100, 90, 10, 0, 0.0), False),  # 10 %: not more
        (Load(10.0, 100, 89, 11, 0, 0.0), True),
        (Load(10.0, 9, 0, 9, 0, 0.0), False),  # too few to say
        (Load(10.0, 0, 0, 0, 1, liveness.OVERDUE_LIMIT), False),
        (Load(10.0, 0, 0, 0, 1, liveness.OVERDUE_LIMIT + 0.1), True),
    ],
)
def test_the_overload_rule_of_one_check(load, overloaded):
    assert load.overloaded is overloaded
