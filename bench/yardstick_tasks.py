"""procrastinate tasks for the yardsticks, and a no-op callable for sisy-pg tasks."""

import os

from procrastinate.contrib.django import app


def noop(message):
    """The sisy-pg task of the benchmark: nothing, so that lag is all that is measured."""


@app.task(name="bench.at")
def scheduled_at_job(instant: float):
    """Deferred with schedule_at=instant; its start is read from procrastinate_events."""


if os.environ.get("BENCH_PERIODIC"):

    @app.periodic(cron="* * * * * *")
    @app.task(name="bench.periodic")
    def periodic_job(timestamp: int):
        """procrastinate's own periodic task, every second."""
