"""Callables for tasks in the tests. Each records its call as a Hit row."""

import datetime as dt
import threading
import time

from .models import Hit

NOT_CALLABLE = 42


def _hit(name, message):
    Hit.objects.create(
        name=name,
        task_id=message["task"].pk,
        run_id=message["message"]["run_id"],
        scheduled_for=message["message"]["scheduled_for"],
    )


def record(message):
    _hit("record", message)


def sisy_style(message):
    """Written for Sisy 1.0b3: reads only the Channels message, ``{'id': pk, 'ts': epoch}``."""
    channel_message = message["channel_message"]
    Hit.objects.create(
        name="sisy_style",
        task_id=channel_message["id"],
        run_id=0,  # a Sisy callable knows no run id
        scheduled_for=dt.datetime.fromtimestamp(channel_message["ts"], tz=dt.timezone.utc),
    )


def fail(message):
    raise RuntimeError("boom from the test callable")


def slow(message):
    _hit("slow", message)
    time.sleep(message["task"].userdata.get("seconds", 2))


def two_params(message, other):
    pass


def wrong_name(msg):
    pass


def no_params():
    pass


class Things:
    @classmethod
    def class_job(cls, message):
        _hit("class_job", message)

    @staticmethod
    def static_job(message):
        _hit("static_job", message)

    def plain_instance_job(self, message):  # not a Django model: refused
        pass


def flaky(message):
    """Fails the first two calls for a run, succeeds from the third (counted by its Hit rows)."""
    _hit("flaky", message)
    calls = Hit.objects.filter(name="flaky", run_id=message["message"]["run_id"]).count()
    if calls <= 2:
        raise RuntimeError(f"flaky call {calls} fails")


def fail_counted(message):
    """Always fails, after recording the call (so the attempts can be counted)."""
    _hit("fail_counted", message)
    raise RuntimeError("always fails")


def builtins_probe(message):
    """Records whether this process's builtins were changed by a call of ``dict.update``.

    A row naming ``tests.testapp.jobs.__builtins__.update`` must never be
    called: had it been, the message's keys would be builtins of the worker.
    """
    import builtins

    _hit("builtins_changed" if hasattr(builtins, "channel_message") else "builtins_intact", message)


def hang(message):
    """Never returns: a callable stuck on a lock, a socket without timeout, a bug."""
    _hit("hang", message)
    threading.Event().wait()
