"""The runner's care for runs when its job is cancelled, and where it awaits async callables
(no database)."""

import asyncio
import threading
import types

import pytest

from sisy_pg import runner

# A sisy worker that is not stopping: all _all_recorded reads of it.
WORKING = types.SimpleNamespace(stopping=False)


def test_a_cancelled_job_still_waits_for_its_runs_to_be_recorded():
    async def scenario():
        recorded = []

        async def run(name: str) -> str:
            await asyncio.sleep(0.05)
            recorded.append(name)
            return "succeeded"

        runs = {n: asyncio.create_task(run(f"r{n}")) for n in range(3)}
        waiting = asyncio.create_task(runner._all_recorded(None, WORKING, runs))
        await asyncio.sleep(0.01)
        waiting.cancel()  # procrastinate aborting the job, or a worker's shutdown
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return recorded, [r.cancelled() for r in runs.values()]

    recorded, cancelled = asyncio.run(scenario())
    assert sorted(recorded) == ["r0", "r1", "r2"] and not any(cancelled)


def test_outcomes_of_runs_are_gathered_with_their_exceptions():
    async def scenario():
        async def fails() -> str:
            raise RuntimeError("the database went away")

        async def works() -> str:
            return "succeeded"

        runs = {1: asyncio.create_task(fails()), 2: asyncio.create_task(works())}
        return await runner._all_recorded(None, WORKING, runs)

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
