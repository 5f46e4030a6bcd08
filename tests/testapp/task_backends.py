"""A django.tasks backend outside sisy-pg's database whose broker is away."""

from sisy_pg import tasks_framework


class BrokerAwayBackend(tasks_framework.part("BaseTaskBackend")):
    def enqueue(self, task, args, kwargs):
        raise ConnectionError("the broker is away")
