"""Cron and time-zone arithmetic (pure: no database)."""

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from sisy_pg import schedule
from sisy_pg.schedule import Plan, PlanInput, ScheduleError

UTC = dt.timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def at(*args, tz=UTC):
    return dt.datetime(*args, tzinfo=tz)


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "30 0 * * *",
        "* * * * * */30",
        "0 0 l * *",
        "0 9 * * mon-fri",
        "0 0 * * 7",
        "0 0 * * 0",
        "*/15 8-18 1,15 * *",
        "  5   4 * * sun ",
    ],
)
def test_valid_schedules(expression):
    assert schedule.validate_schedule(expression) == " ".join(expression.split())


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("* * *", "has 3 field(s)"),
        ("* * * * * * *", "has 7 field(s)"),
        ("", "has 0 field(s)"),
        ("61 * * * *", "is not valid cron"),
        ("* * * * * 70", "is not valid cron"),
        ("* * * * blursday", "is not valid cron"),
    ],
)
def test_invalid_schedules_name_the_problem(expression, fragment):
    with pytest.raises(ScheduleError, match=re.escape(fragment)) as info:
        schedule.validate_schedule(expression)
    assert isinstance(info.value, ValueError)


def test_schedule_must_be_a_string():
    with pytest.raises(ScheduleError, match="must be a cron string"):
        schedule.validate_schedule(5)


def test_unknown_timezone():
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        schedule.get_timezone("Mars/Olympus")


def test_schedule_is_read_in_the_task_timezone():
    # 00:30 in Paris is 23:30 UTC the day before in winter.
    assert schedule.next_after("30 0 * * *", "Europe/Paris", at(2026, 1, 10, 12)) == at(
        2026, 1, 10, 23, 30
    )
    assert schedule.next_after("30 0 * * *", "UTC", at(2026, 1, 10, 12)) == at(2026, 1, 11, 0, 30)


def test_sixth_field_is_seconds_and_result_is_strictly_after():
    start = at(2026, 1, 1, 0, 0, 20)
    assert schedule.next_after("* * * * * */20", "UTC", start) == at(2026, 1, 1, 0, 0, 40)


def test_last_day_of_month():
    assert schedule.next_after("0 0 l * *", "UTC", at(2026, 2, 3)) == at(2026, 2, 28)


def test_dst_fall_back_fixed_time_fires_once():
    # 2026-10-25: Paris clocks go from 03:00 CEST back to 02:00 CET.
    first = schedule.next_after("30 2 * * *", "Europe/Paris", at(2026, 10, 24, 12))
    assert first == at(2026, 10, 25, 2, 30, tz=PARIS).astimezone(UTC)  # 00:30 UTC
    second = schedule.next_after("30 2 * * *", "Europe/Paris", first)
    assert second == at(2026, 10, 26, 2, 30, tz=PARIS).astimezone(UTC)


def test_dst_fall_back_interval_keeps_running_through_repeated_hour():
    start = at(2026, 10, 25, 0, 0)  # 02:00 CEST
    instants = []
    current = start
    for _ in range(4):
        current = schedule.next_after("*/30 * * * *", "Europe/Paris", current)
        instants.append(current)
    assert instants == [
        at(2026, 10, 25, 0, 30),
        at(2026, 10, 25, 1, 0),
        at(2026, 10, 25, 1, 30),
        at(2026, 10, 25, 2, 0),
    ]


def test_dst_spring_forward_missing_time_fires_after_gap():
    # 2026-03-29: 02:30 does not exist in Paris.
    instant = schedule.next_after("30 2 * * *", "Europe/Paris", at(2026, 3, 28, 12))
    assert instant.astimezone(PARIS).hour == 3
    assert instant < at(2026, 3, 29, 12)


def test_next_after_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="aware"):
        schedule.next_after("* * * * *", "UTC", dt.datetime(2026, 1, 1))


NOW = at(2026, 5, 5, 10, 0, 0, 250000)
WINDOW = dt.timedelta(seconds=60)


def test_plan_from_now_waits_for_the_schedule():
    plan = schedule.plan_from_now(PlanInput("*/5 * * * *", "UTC"), NOW)
    assert plan == Plan(next_run=at(2026, 5, 5, 10, 5))


def test_plan_from_now_runs_at_once_when_not_waiting():
    plan = schedule.plan_from_now(PlanInput("0 0 1 1 *", "UTC", wait_for_schedule=False), NOW)
    assert plan.next_run == NOW


def test_not_waiting_only_applies_before_the_first_fire():
    task = PlanInput("*/5 * * * *", "UTC", wait_for_schedule=False, fire_count=1)
    assert schedule.plan_from_now(task, NOW).next_run == at(2026, 5, 5, 10, 5)


def test_start_running_is_the_first_eligible_instant():
    start = at(2026, 5, 6, 7, 0)
    assert schedule.plan_from_now(PlanInput("0 * * * *", "UTC", start_running=start), NOW) == Plan(
        start
    )
    once = PlanInput("0 0 1 1 *", "UTC", start_running=start, wait_for_schedule=False)
    assert schedule.plan_from_now(once, NOW).next_run == start


def test_end_running_finishes_the_task():
    task = PlanInput("0 * * * *", "UTC", end_running=at(2026, 5, 5, 10, 30))
    assert schedule.plan_from_now(task, NOW) == Plan(next_run=None, finished=True)


def test_iterations_used_up_finish_the_task():
    task = PlanInput("* * * * * *", "UTC", iterations=3, fire_count=3)
    assert schedule.plan_after_fire(task, NOW, NOW, WINDOW).finished
    assert schedule.plan_from_now(task, NOW).finished
    assert not schedule.plan_after_fire(
        PlanInput("* * * * * *", "UTC", iterations=3, fire_count=2), NOW, NOW, WINDOW
    ).finished


def test_plan_after_fire_follows_the_fired_instant_not_the_clock():
    # The planner woke 2.5 s late: no instant of an every-second task is skipped.
    fired = at(2026, 5, 5, 10, 0, 0)
    late_now = fired + dt.timedelta(seconds=2.5)
    plan = schedule.plan_after_fire(PlanInput("* * * * * *", "UTC"), fired, late_now, WINDOW)
    assert plan == Plan(next_run=at(2026, 5, 5, 10, 0, 1))


def test_plan_after_fire_skips_instants_older_than_the_catchup_window():
    fired = at(2026, 5, 5, 9, 0, 0)
    plan = schedule.plan_after_fire(PlanInput("* * * * *", "UTC"), fired, NOW, WINDOW)
    assert plan == Plan(next_run=at(2026, 5, 5, 10, 1), skipped_instants=True)
