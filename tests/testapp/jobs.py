"""Callables for tasks in the tests. Each records its call as a Hit row."""

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
