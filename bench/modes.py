"""The bench's sizes: smoke (checks the bench itself), quick (< 5 min on 2 cores), full."""

from __future__ import annotations

import dataclasses

# The --only names, in the order they run. "scale" is create, idle, rss, the
# fetch, the planning cost and the hot queries' plans, sharing one big table.
SCENARIOS = ("lag", "enqueue", "burst", "change", "scale", "metrics")


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    lag_tasks: int
    lag_seconds: float
    burst: int
    change_samples: int
    idle_tasks: int
    idle_seconds: float
    big: int
    rss_settle: float
    plan_small: int
    plan_due: int
    plan_repeat: int
    fetch_repeat: int
    create: int
    parked_big: int  # the parked-jobs yardstick's big size
    warmup: float = 3.0  # seconds after the tasks are created (or the worker is up) not measured
    idle_settle: float = 5.0  # seconds after the idle workers are up not counted
    metrics_history: int = 1_000_000  # finished runs beside which scrapes are timed
    metrics_repeat: int = 100  # scrapes timed at each size


MODES = {
    "smoke": Mode(
        "smoke",
        lag_tasks=5,
        lag_seconds=2,
        burst=30,
        change_samples=10,
        idle_tasks=1000,
        idle_seconds=2,
        big=3000,
        rss_settle=1,
        plan_small=200,
        plan_due=20,
        plan_repeat=3,
        fetch_repeat=20,
        parked_big=3000,
        create=200,
        warmup=1.0,
        idle_settle=1.0,
        metrics_history=5_000,
        metrics_repeat=5,
    ),
    "quick": Mode(
        "quick",
        lag_tasks=50,
        lag_seconds=30,
        burst=2000,
        change_samples=200,
        idle_tasks=100_000,
        idle_seconds=30,
        big=200_000,
        rss_settle=15,
        plan_small=1000,
        plan_due=100,
        plan_repeat=50,
        fetch_repeat=1000,
        parked_big=100_000,
        create=20_000,
        metrics_history=200_000,
        metrics_repeat=50,
    ),
    "full": Mode(
        "full",
        lag_tasks=50,
        lag_seconds=120,
        burst=10_000,
        change_samples=200,
        idle_tasks=100_000,
        idle_seconds=60,
        big=1_000_000,
        rss_settle=30,
        plan_small=1000,
        plan_due=100,
        plan_repeat=100,
        fetch_repeat=2000,
        parked_big=1_000_000,
        create=100_000,
    ),
}


def expected_seconds(mode: Mode, only: set[str]) -> float:
    """The run's expected length, for the progress bar (the phases' estimates added up)."""
    total = 10.0
    if "lag" in only:
        total += 2 * (mode.warmup + mode.lag_seconds + 3) + 9
    if "enqueue" in only:
        total += mode.warmup + mode.lag_seconds + 3 + 5
    if "burst" in only:
        total += 14 + mode.burst / 500 + mode.burst / 130
    if "change" in only:
        total += 8 + mode.change_samples * 0.17
    if "scale" in only:
        total += (
            15
            + 3
            + mode.create / 1500
            + 12
            + mode.idle_tasks / 20000
            + mode.idle_seconds
            + 8
            + (mode.big - mode.idle_tasks) / 20000
            + mode.rss_settle
            + 10
            + 3
            + mode.parked_big / 10000
        )
    if "metrics" in only:
        total += 5 + mode.metrics_history / 35000
    return total
