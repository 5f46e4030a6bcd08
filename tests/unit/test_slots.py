"""A worker's callable slots: the fair share, priority, stuck threads (no database)."""

import asyncio
import threading

import pytest

from sisy_pg.slots import CallableSlots, OverShare, default_share


def test_the_default_share_is_half_the_concurrency_and_at_least_one():
    assert [default_share(n, None) for n in (1, 2, 3, 8)] == [1, 1, 1, 4]
    assert default_share(8, 6) == 6
    assert default_share(4, 10) == 4  # never more than the worker has
    assert default_share(4, 0) == 1


def test_a_task_at_its_share_is_refused_at_once_others_still_get_slots():
    async def scenario():
        slots = CallableSlots(4, share=2)
        tickets = [slots.try_take("hangs"), slots.try_take("hangs")]
        assert None not in tickets
        with pytest.raises(OverShare, match="holds 2 of this worker's callable slots"):
            slots.try_take("hangs")
        assert slots.try_take("healthy") is not None
        assert slots.held_by("hangs") == 2 and slots.free == 1
        slots.give_back(tickets[0])
        assert slots.try_take("hangs") is not None  # under its share again

    asyncio.run(scenario())


def test_a_stuck_thread_keeps_counting_against_its_task_until_it_returns():
    async def scenario():
        slots = CallableSlots(2, share=1)
        ticket = slots.try_take("hangs", run_id=7)
        slots.mark_stuck(ticket)
        with pytest.raises(OverShare, match="1 of them stuck past their timeout"):
            slots.check_share("hangs")
        assert [held.run_id for held in slots.stuck()] == [7]
        slots.give_back(ticket)
        assert slots.stuck() == [] and slots.held == 0

    asyncio.run(scenario())


def test_a_freed_slot_goes_to_the_highest_priority_then_the_earliest():
    async def scenario():
        slots = CallableSlots(1, share=1)
        first = slots.try_take("a")
        order = []

        async def wait(task, priority):
            ticket = await slots.take(task, priority)
            order.append(task)
            slots.give_back(ticket)

        waiters = [
            asyncio.create_task(wait("low", 0)),
            asyncio.create_task(wait("high", 10)),
            asyncio.create_task(wait("low-too", 0)),
        ]
        await asyncio.sleep(0.01)
        assert order == [] and slots.try_take("d") is None  # none free, and runs wait
        slots.give_back(first)
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        return order

    assert asyncio.run(scenario()) == ["high", "low", "low-too"]


def test_a_cancelled_waiter_passes_its_slot_on():
    async def scenario():
        slots = CallableSlots(1, share=1)
        first = slots.try_take("a")
        cancelled = asyncio.create_task(slots.take("b"))
        served = asyncio.create_task(slots.take("c"))
        await asyncio.sleep(0.01)
        slots.give_back(first)
        cancelled.cancel()
        ticket = await asyncio.wait_for(served, 1)
        return slots.held, ticket

    held, ticket = asyncio.run(scenario())
    assert held == 1 and ticket


def test_callables_run_in_daemon_threads_which_never_keep_a_process_alive():
    async def scenario():
        slots = CallableSlots(2, share=1)
        seen = {}

        def call():
            seen["daemon"] = threading.current_thread().daemon
            return 42

        result = await slots.threads.submit(call)
        slots.close()
        return result, seen

    result, seen = asyncio.run(scenario())
    assert result == 42 and seen["daemon"] is True


def test_full_since_is_set_while_no_slot_is_free():
    async def scenario():
        slots = CallableSlots(1, share=1)
        assert slots.full_since is None
        ticket = slots.try_take("a")
        assert slots.full_since is not None
        slots.give_back(ticket)
        assert slots.full_since is None

    asyncio.run(scenario())


def test_the_last_free_slot_is_kept_for_a_task_that_holds_none():
    async def scenario():
        slots = CallableSlots(4, share=2)
        slots.try_take("hangs a")
        slots.try_take("hangs a")
        slots.try_take("hangs b")
        assert slots.free == 1
        with pytest.raises(OverShare, match="holds 1 of this worker's callable slots, and none"):
            slots.try_take("hangs b")  # it holds one: the last is not for it, nor does it wait
        return slots.try_take("healthy")

    assert asyncio.run(scenario())
