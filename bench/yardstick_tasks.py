"""procrastinate tasks for the yardsticks, and a no-op callable for sisy-pg tasks."""

import os

from procrastinate.contrib.django import app


def noop(message):
    """The sisy-pg task of the benchmark: nothing, so that lag is all that is measured."""


@app.task(name="bench.noop")
def plain_noop():
    """The burst's yardstick: a sync no-op procrastinate task, as a Django user writes it."""


@app.task(name="bench.at")
def scheduled_at_job(instant: float):
    """Deferred with schedule_at=instant; its start is read from procrastinate_events."""


@app.task(name="bench.periodic")
def periodic_job(timestamp: int):
    """procrastinate's own periodic task, every second (BENCH_PERIODIC schedules of it)."""


for number in range(int(os.environ.get("BENCH_PERIODIC", "0"))):
    app.periodic(cron="* * * * * *", periodic_id=f"bench-{number}")(periodic_job)
