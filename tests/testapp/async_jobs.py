"""``async def`` callables for the tests. Each records its call as a Hit row, with the async ORM."""

import threading
import time

from asgiref.sync import sync_to_async

from .models import Hit


async def _hit(name, message, row_pk=""):
    await Hit.objects.acreate(
        name=name,
        task_id=message["task"].pk,
        run_id=message["message"]["run_id"],
        scheduled_for=message["message"]["scheduled_for"],
        row_pk=row_pk,
    )


async def record(message):
    await _hit("async_record", message)


async def fail(message):
    """Always fails, after recording the call (so the attempts can be counted)."""
    await _hit("async_fail", message)
    raise RuntimeError("boom from an async callable")


async def blocking(message):
    """Blocks its event loop for userdata["seconds"] (time.sleep in a coroutine)."""
    await _hit("async_blocking", message)
    time.sleep(message["task"].userdata.get("seconds", 3))


async def orm_thread(message):
    """Records the thread that runs its sync_to_async calls (Django's async ORM's queries)."""
    ident = await sync_to_async(threading.get_ident)()
    await _hit("orm_thread", message, row_pk=str(ident))


class AsyncThings:
    @classmethod
    async def class_job(cls, message):
        await _hit("async_class_job", message)

    @staticmethod
    async def static_job(message):
        await _hit("async_static_job", message)


def returns_a_coroutine(message):
    """A sync function that returns a coroutine, as some decorators make them: awaited too."""
    return _hit("returns_a_coroutine", message)


async def async_generator(message):  # refused: calling it would not run its body
    yield
