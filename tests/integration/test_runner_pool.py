"""The runners' connections: a stalled statement is said, an outage is ridden out (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from sisy_pg.store import RunnerPool, default_store

pytestmark = pytest.mark.django_db(transaction=True)


def params(**extra):
    return {**default_store().connection_params(), **extra}


def test_a_statement_waiting_for_a_lock_is_logged_as_a_stall_then_as_ended(caplog):
    caplog.set_level(logging.INFO, logger="sisy_pg.store")

    async def scenario():
        pool = RunnerPool(params(), 2, outage_tolerance=5, stall_warning=0.3)
        async with await psycopg.AsyncConnection.connect(**params()) as holder:
            await holder.execute("LOCK TABLE sisy_housekeeping IN ACCESS EXCLUSIVE MODE")
            waiting = asyncio.create_task(
                pool.query("SELECT last_at::text FROM sisy_housekeeping", {})
            )
            await asyncio.sleep(0.8)
            assert not waiting.done()
            await holder.rollback()  # releases the lock
        rows = await asyncio.wait_for(waiting, 5)
        await pool.close()
        return rows

    assert len(asyncio.run(scenario())) == 1
    stalls = [r for r in caplog.records if getattr(r, "action", "") == "runner_stall"]
    ended = [r for r in caplog.records if getattr(r, "action", "") == "runner_stall_ended"]
    assert len(stalls) == 1 and "has not returned after 0.3 s" in stalls[0].getMessage()
    assert len(ended) == 1 and ended[0].seconds >= 0.3


def test_writes_to_a_read_only_database_are_retried_then_given_up_with_one_warning(caplog):
    caplog.set_level(logging.INFO, logger="sisy_pg.store")

    async def scenario():
        pool = RunnerPool(
            params(options="-c default_transaction_read_only=on"), 2, outage_tolerance=1.0
        )
        started = asyncio.get_running_loop().time()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await pool.query("UPDATE sisy_housekeeping SET last_at = last_at", {})
        took = asyncio.get_running_loop().time() - started
        await pool.close()
        return took

    took = asyncio.run(scenario())
    assert took >= 1.0  # retried for the tolerance, not given up at the first error
    outages = [r for r in caplog.records if getattr(r, "action", "") == "database_outage"]
    assert len(outages) == 1
    assert "ReadOnlySqlTransaction" in outages[0].getMessage()


def test_a_pool_with_every_connection_busy_is_a_stall_not_an_outage(caplog):
    """Waiting for a busy connection (here: behind a lock) never renews the pool or says outage."""
    caplog.set_level(logging.INFO, logger="sisy_pg.store")

    async def scenario():
        pool = RunnerPool(params(), 1, outage_tolerance=30, stall_warning=0.5)
        async with await psycopg.AsyncConnection.connect(**params()) as holder:
            await holder.execute("LOCK TABLE sisy_housekeeping IN ACCESS EXCLUSIVE MODE")
            blocked = [
                asyncio.create_task(pool.query("SELECT last_at::text FROM sisy_housekeeping", {}))
                for _ in range(2)
            ]
            await asyncio.sleep(2.5)  # the second waits for the only connection past its timeout
            assert not any(task.done() for task in blocked)
            pool_before = pool._pool
            await holder.rollback()
        results = await asyncio.wait_for(asyncio.gather(*blocked), 10)
        renewed = pool._pool is not pool_before
        await pool.close()
        return results, renewed

    results, renewed = asyncio.run(scenario())
    assert [len(rows) for rows in results] == [1, 1] and not renewed
    actions = [getattr(r, "action", "") for r in caplog.records]
    assert "database_outage" not in actions
    assert "runner_stall" in actions
