"""A worker's callable slots: how many callables run at once, and who gets the next free one.

A worker calls at most ``--concurrency`` callables at once, each in a thread
of its own. A callable that never returns keeps its thread for good (Python
cannot stop a thread), so two rules keep one task from starving the others:

* **a fair share**: the runs of one task hold at most ``share`` slots
  (SISY_TASK_SLOTS; by default half the concurrency, at least 1), threads of
  runs that timed out but never returned included. A run of a task at its
  share, or of a task that holds slots when none is free, does not wait: the
  runner records it as skipped (reason ``fair_share``): the runs of a task
  that holds slots never wait for one to free up;
* **the last slot for a newcomer**: the last free slot goes only to a task
  that holds none, so that two hanging tasks still leave one to the others;
* **priority, then arrival**: when no slot is free, runs wait, and a slot
  that frees up goes to the waiting run of highest priority (the task's
  ``priority`` option), the earliest first among equals.

Threads are daemon threads, so that a worker whose callables hang can still
exit (SIGTERM, or all its slots stuck: see :mod:`sisy_pg.worker`). No
database here: ``tests/unit/test_slots.py`` tests it alone.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import contextvars
import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

TaskKey = Hashable


def default_share(concurrency: int, setting: int | None) -> int:
    """The most slots one task may hold in a worker of ``concurrency`` slots."""
    if setting is not None:
        return max(1, min(int(setting), concurrency))
    return max(1, concurrency // 2)


@dataclasses.dataclass
class Held:
    """A slot in use: whose run holds it, since when, and whether it outlived its timeout."""

    task: TaskKey
    run_id: int | None
    since: float  # monotonic
    stuck_since: float | None = None  # monotonic: when its run timed out, its thread still busy


class OverShare(Exception):
    """The task holds its share of the slots, or holds some and none is free: the run is not queued."""

    def __init__(self, task: TaskKey, held: int, share: int, stuck: int) -> None:
        self.task, self.held, self.share, self.stuck = task, held, share, stuck
        stuck_text = f", {stuck} of them stuck past their timeout" if stuck else ""
        if held >= share:
            super().__init__(
                f"its task already holds {held} of this worker's callable slots, its share "
                f"(SISY_TASK_SLOTS: {share}){stuck_text}"
            )
        else:
            super().__init__(
                f"its task already holds {held} of this worker's callable slots{stuck_text}, "
                "and none is free for it"
            )


class _DaemonThreads:
    """Threads for callables that never keep a process from exiting (unlike ThreadPoolExecutor's)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._count = itertools.count(1)

    def submit(self, func: Callable[[], Any]) -> asyncio.Future[Any]:
        """Call ``func`` in a thread, with this context; a future of its result on this loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        context = contextvars.copy_context()

        def settle(outcome: Callable[[asyncio.Future[Any]], None]) -> None:
            if not future.done():
                outcome(future)

        def work() -> None:
            try:
                result = context.run(func)
            except BaseException as exc:  # the caller records it
                error = exc
                _call_soon(loop, settle, lambda f: f.set_exception(error))
            else:
                _call_soon(loop, settle, lambda f: f.set_result(result))

        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._work.put(work)
        if start:
            threading.Thread(
                target=self._serve, name=f"{self._name}-{next(self._count)}", daemon=True
            ).start()
        return future

    def _serve(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            work()
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Let the idle threads end (busy ones end when their callable returns)."""
        with self._lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._work.put(None)


def _call_soon(loop: asyncio.AbstractEventLoop, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the worker is gone
        loop.call_soon_threadsafe(*args)


class CallableSlots:
    """At most ``size`` callables at once; a task at most ``share`` of them (see the module)."""

    def __init__(self, size: int, share: int) -> None:
        self.size = max(size, 1)
        self.share = max(1, min(share, self.size))
        self.threads = _DaemonThreads("sisy-run")
        self._held: dict[int, Held] = {}  # by ticket
        self._tickets = itertools.count(1)
        self._by_task: collections.Counter[TaskKey] = collections.Counter()
        # Waiting runs, in the order they get slots: (-priority, arrival, future, task).
        self._waiting: list[tuple[int, int, asyncio.Future[None], TaskKey]] = []
        self._order = itertools.count()
        self._reserved = 0  # slots handed to waiters who have not taken them yet
        self.full_since: float | None = None  # monotonic: since when no slot is free

    # --- counts -------------------------------------------------------------------

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def free(self) -> int:
        return self.size - len(self._held) - self._reserved

    def held_by(self, task: TaskKey) -> int:
        return self._by_task[task]

    def stuck(self) -> list[Held]:
        """The slots held by runs that timed out and whose thread has not returned."""
        return [held for held in self._held.values() if held.stuck_since is not None]

    # --- taking and giving back ---------------------------------------------------

    def check_share(self, task: TaskKey) -> None:
        """Raise OverShare if ``task`` holds its share, or holds some and none is free for it.

        Only the runs of a task that holds no slot wait for one: a run of a
        task whose runs are slow or hang would otherwise wait, and keep its
        job waiting, for as long as they do.
        """
        held = self._by_task[task]
        if held >= self.share or (held and not self._may_take(task)):
            stuck = sum(1 for h in self._held.values() if h.task == task and h.stuck_since)
            raise OverShare(task, held, self.share, stuck)

    def _may_take(self, task: TaskKey) -> bool:
        """A slot is free for ``task``: the last one only if it holds none.

        That last slot is kept for a task that holds none, so that two tasks
        whose callables hang (each within its share) still leave a slot to
        the others.
        """
        free = self.free
        return free > 1 or (free == 1 and self._by_task[task] == 0)

    def try_take(self, task: TaskKey, run_id: int | None = None) -> int | None:
        """A ticket for a free slot now, or None (none free for it, or runs wait before it)."""
        self.check_share(task)
        if not self._may_take(task) or any(self._may_take(w[3]) for w in self._waiting):
            return None
        return self._hold(task, run_id)

    async def take(self, task: TaskKey, priority: int = 0, run_id: int | None = None) -> int:
        """Wait for a slot (highest priority first); its ticket. Raises OverShare."""
        ticket = self.try_take(task, run_id)
        if ticket is not None:
            return ticket
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bisect.insort(self._waiting, (-priority, next(self._order), future, task))
        self._hand_over()  # a slot may be free for it, if not for those before it
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._reserved -= 1  # handed over, then cancelled: pass it on
                self._hand_over()
            else:
                self._waiting = [w for w in self._waiting if w[2] is not future]
            raise
        self._reserved -= 1
        try:
            self.check_share(task)  # its task may have reached its share meanwhile
        except OverShare:
            self._hand_over()
            raise
        return self._hold(task, run_id)

    def _hold(self, task: TaskKey, run_id: int | None) -> int:
        ticket = next(self._tickets)
        self._held[ticket] = Held(task, run_id, time.monotonic())
        self._by_task[task] += 1
        if self.free <= 0 and self.full_since is None:
            self.full_since = time.monotonic()
        return ticket

    def mark_stuck(self, ticket: int) -> None:
        """The run holding ``ticket`` timed out; its thread still runs, and still counts."""
        held = self._held.get(ticket)
        if held is not None and held.stuck_since is None:
            held.stuck_since = time.monotonic()

    def give_back(self, ticket: int) -> None:
        held = self._held.pop(ticket, None)
        if held is None:
            return
        self._by_task[held.task] -= 1
        if self._by_task[held.task] <= 0:
            del self._by_task[held.task]
        self._hand_over()

    def _hand_over(self) -> None:
        """Give free slots to the waiting runs that may take them, in order."""
        for waiter in list(self._waiting):
            if self.free <= 0:
                break
            _, _, future, task = waiter
            if future.done():
                self._waiting.remove(waiter)
            elif self._may_take(task):
                self._waiting.remove(waiter)
                self._reserved += 1
                future.set_result(None)
        if self.free > 0:
            self.full_since = None

    def close(self) -> None:
        self.threads.close()
