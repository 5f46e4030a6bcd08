"""The runner's callable slots, its care for runs when its job is cancelled, and where it
awaits async callables (no database)."""

import asyncio
import threading

import pytest

from sisy_pg import runner


def test_slots_take_what_is_free_and_wait_for_one_when_none_is():
    async def scenario():
        slots = runner.CallableSlots(3)
        assert await slots.take(5) == 3  # all that is free, at once
        waiting = asyncio.create_task(slots.take(2))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # none free: waits
        slots.give_back(1)
        assert await asyncio.wait_for(waiting, 1) == 1
        slots.give_back(3)
        assert await slots.take(1) == 1

    asyncio.run(scenario())


def test_a_cancelled_job_still_waits_for_its_runs_to_be_recorded():
    async def scenario():
        recorded = []

        async def run(name: str) -> str:
            await asyncio.sleep(0.05)
            recorded.append(name)
            return "succeeded"

        runs = [asyncio.create_task(run(f"r{n}")) for n in range(3)]
        waiting = asyncio.create_task(runner._all_recorded(runs))
        await asyncio.sleep(0.01)
        waiting.cancel()  # procrastinate aborting the job, or a worker's shutdown
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return recorded, [r.cancelled() for r in runs]

    recorded, cancelled = asyncio.run(scenario())
    assert sorted(recorded) == ["r0", "r1", "r2"] and not any(cancelled)


def test_outcomes_of_runs_are_gathered_with_their_exceptions():
    async def scenario():
        async def fails() -> str:
            raise RuntimeError("the database went away")

        async def works() -> str:
            return "succeeded"

        runs = [asyncio.create_task(fails()), asyncio.create_task(works())]
        return await runner._all_recorded(runs)

    first, second = asyncio.run(scenario())
    assert isinstance(first, RuntimeError) and second == "succeeded"


def test_an_async_callable_is_awaited_on_a_loop_of_its_own_while_its_thread_waits():
    """Not on the worker's event loop (which a blocking coroutine would stall)."""
    seen = {}

    async def callable_coroutine():
        seen["loop"] = asyncio.get_running_loop()
        seen["thread"] = threading.get_ident()
        await asyncio.sleep(0.05)
        seen["done"] = True

    def callable_thread():
        runner._await_on_a_loop_of_its_own(callable_coroutine())
        return threading.get_ident(), seen.get("done")

    async def worker():
        loop = asyncio.get_running_loop()
        return loop, threading.get_ident(), await loop.run_in_executor(None, callable_thread)

    worker_loop, worker_thread, (slot_thread, done_on_return) = asyncio.run(worker())
    assert done_on_return  # the callable thread waited for the coroutine's end
    assert seen["loop"] is not worker_loop
    assert seen["thread"] not in (worker_thread, slot_thread)


def test_an_async_callable_s_exception_reaches_its_callable_thread():
    async def fails():
        raise RuntimeError("boom in a coroutine")

    with pytest.raises(RuntimeError, match="boom in a coroutine"):
        runner._await_on_a_loop_of_its_own(fails())
