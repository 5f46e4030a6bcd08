"""Cron and time-zone arithmetic (pure: no database)."""

import datetime as dt
import itertools
import re
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from sisy_pg import schedule
from sisy_pg.schedule import Plan, PlanInput, ScheduleError

UTC = dt.timezone.utc


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


def test_next_after_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="aware"):
        schedule.next_after("* * * * *", "UTC", dt.datetime(2026, 1, 1))


NOW = at(2026, 5, 5, 10, 0, 0, 250000)


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
    assert schedule.plan_after(task, NOW).finished
    assert schedule.plan_from_now(task, NOW).finished
    assert not schedule.plan_after(
        PlanInput("* * * * * *", "UTC", iterations=3, fire_count=2), NOW
    ).finished


def test_plan_after_follows_the_instant_not_the_clock():
    # Whenever the planner wakes, no instant of an every-second task is skipped
    # here: what is late is the policies' business (tests/unit/test_policies.py).
    fired = at(2026, 5, 5, 10, 0, 0)
    plan = schedule.plan_after(PlanInput("* * * * * *", "UTC"), fired)
    assert plan == Plan(next_run=at(2026, 5, 5, 10, 0, 1))


@pytest.mark.parametrize(
    ("expression", "before", "not_before", "expected"),
    [
        # every second, a week back: found by bisection, not by walking
        ("* * * * * *", at(2026, 5, 12, 10, 0, 0, 5), at(2026, 5, 5), at(2026, 5, 12, 10)),
        ("* * * * * *", at(2026, 5, 5, 10), at(2026, 5, 5, 10), None),
        ("*/15 * * * *", at(2026, 5, 5, 10, 14), at(2026, 5, 5), at(2026, 5, 5, 10, 0)),
        # every second of the 1st day of the month, asked on the 15th
        ("* * 1 * * *", at(2026, 5, 15), at(2026, 4, 1), at(2026, 5, 1, 23, 59, 59)),
        ("0 0 29 2 *", at(2026, 5, 5), at(2000, 1, 1), at(2024, 2, 29)),
        ("0 0 29 2 *", at(2026, 5, 5), at(2024, 3, 1), None),
    ],
)
def test_last_before(expression, before, not_before, expected):
    assert schedule.last_before(expression, "UTC", before, not_before) == expected


# --- Daylight saving -------------------------------------------------------
#
# The rule (docs/schedules.md, "Daylight saving time"; schedule.next_after):
# - an hour field that covers every hour ('*/15 * * * *', '0 * * * *',
#   '* * * * * */10') is an interval read on the clock: it fires at every real
#   instant whose local time matches, so on both passes of a repeated hour and
#   never for local times that clocks going forward skip;
# - any other hour field names times of day ('30 1 * * *', '*/15 2 * * *'):
#   a time that happens twice fires once, at its first occurrence; times that
#   do not exist fire once, together, at the first instant after the gap.
#
# One table per zone. Each row: a schedule, the instant to plan from, then the
# successive instants next_after() must return, all in UTC ("MM-DD hh:mm[:ss]"
# is in 2026); the comments give the local times.


def utc(text):
    if text.count("-") == 1:
        text = f"2026-{text}"
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def shown(instant, zone):
    local = instant.astimezone(ZoneInfo(zone))
    return f"{instant:%Y-%m-%d %H:%M:%S}Z = {local:%a %H:%M:%S %Z}"


def assert_fires(zone, expression, after, expected):
    got, current = [], utc(after)
    for _ in expected:
        current = schedule.next_after(expression, zone, current)
        got.append(current)
    assert [shown(i, zone) for i in got] == [shown(utc(e), zone) for e in expected]


# New York, 2026: clocks go forward on 8 March at 02:00 EST (07:00Z) to 03:00
# EDT, and back on 1 November at 02:00 EDT (06:00Z) to 01:00 EST, so 01:00-02:00
# happens twice: 05:00-06:00Z (EDT), then 06:00-07:00Z (EST).
NEW_YORK = [
    # -- back, 1 November
    (
        "fixed time in the repeated hour fires once, at its first occurrence",
        "30 1 * * *",
        "11-01 04:00",
        ["11-01 05:30", "11-02 06:30"],
    ),  # 01:30 EDT, 01:30 EST on the 2nd
    (
        "fixed hour, wildcard minutes: the first pass only (4 fires that day, as every day)",
        "*/15 1 * * *",
        "11-01 04:00",
        ["11-01 05:00", "11-01 05:15", "11-01 05:30", "11-01 05:45", "11-02 06:00"],
    ),
    (
        "hourly fires on both passes: 01:00 EDT, 01:00 EST, 02:00 EST",
        "0 * * * *",
        "11-01 04:30",
        ["11-01 05:00", "11-01 06:00", "11-01 07:00", "11-01 08:00"],
    ),
    (
        "*/15 keeps 15 minutes in elapsed time: 4 more fires in the repeated hour",
        "*/15 * * * *",
        "11-01 05:30",
        ["11-01 05:45", "11-01 06:00", "11-01 06:15", "11-01 06:30", "11-01 06:45", "11-01 07:00"],
    ),
    (
        "every minute: 01:59 EDT, then 01:00 EST one minute later",
        "* * * * *",
        "11-01 05:58",
        ["11-01 05:59", "11-01 06:00", "11-01 06:01"],
    ),
    (
        "every 10 seconds across the change",
        "* * * * * */10",
        "11-01 05:59:40",
        ["11-01 05:59:50", "11-01 06:00:00", "11-01 06:00:10"],
    ),
    (
        "every second: 01:59:59 EDT, then 01:00:00 EST",
        "* * * * * *",
        "11-01 05:59:58",
        ["11-01 05:59:59", "11-01 06:00:00", "11-01 06:00:01"],
    ),
    (
        "an interval on the day of the change only (day of month): both passes",
        "*/30 * 1 11 *",
        "10-31 12:00",
        [
            "11-01 04:00",
            "11-01 04:30",
            "11-01 05:00",
            "11-01 05:30",
            "11-01 06:00",
            "11-01 06:30",
            "11-01 07:00",
        ],
    ),
    (
        "day of month = the day of the change, planned from January",
        "30 1 1 11 *",
        "01-01 00:00",
        ["11-01 05:30", "2027-11-01 05:30"],
    ),  # 2027-11-01 is EDT
    (
        "day of week = the day of the change",
        "30 1 * * sun",
        "10-31 12:00",
        ["11-01 05:30", "11-08 06:30"],
    ),
    # -- forward, 8 March: 02:00-03:00 does not exist
    (
        "a time that exists on the day fires as usual",
        "30 1 * * *",
        "03-08 05:00",
        ["03-08 06:30", "03-09 05:30"],
    ),  # 01:30 EST, then 01:30 EDT
    (
        "a time in the gap fires at the first instant after it: 02:30 -> 03:00 EDT",
        "30 2 * * *",
        "03-08 05:00",
        ["03-08 07:00", "03-09 06:30"],
    ),
    (
        "the gap's four times of a fixed hour fire once, at 03:00 EDT",
        "*/15 2 * * *",
        "03-08 05:00",
        ["03-08 07:00", "03-09 06:00", "03-09 06:15"],
    ),
    (
        "hourly: 01:00 EST, 03:00 EDT (one hour apart)",
        "0 * * * *",
        "03-08 05:30",
        ["03-08 06:00", "03-08 07:00", "03-08 08:00"],
    ),
    (
        "fixed minute, every hour: 02:30 never shows on the clock, so it does not fire",
        "30 * * * *",
        "03-08 06:00",
        ["03-08 06:30", "03-08 07:30"],
    ),  # 01:30 EST, 03:30 EDT
    (
        "*/15: 01:45 EST, 03:00 EDT (15 minutes apart)",
        "*/15 * * * *",
        "03-08 06:30",
        ["03-08 06:45", "03-08 07:00", "03-08 07:15"],
    ),
    (
        "every minute: 01:59 EST, 03:00 EDT",
        "* * * * *",
        "03-08 06:58",
        ["03-08 06:59", "03-08 07:00", "03-08 07:01"],
    ),
    (
        "every 10 seconds across the gap",
        "* * * * * */10",
        "03-08 06:59:40",
        ["03-08 06:59:50", "03-08 07:00:00", "03-08 07:00:10"],
    ),
    (
        "every second: 01:59:59 EST, then 03:00:00 EDT",
        "* * * * * *",
        "03-08 06:59:58",
        ["03-08 06:59:59", "03-08 07:00:00", "03-08 07:00:01"],
    ),
    (
        "day of month = the day of the change, planned from January",
        "30 2 8 3 *",
        "01-01 00:00",
        ["03-08 07:00", "2027-03-08 07:30"],
    ),  # 2027-03-08 is EST
    (
        "day of week = the day of the change",
        "30 2 * * 0",
        "03-07 12:00",
        ["03-08 07:00", "03-15 06:30"],
    ),
]

# Berlin, 2026: forward on 29 March at 02:00 CET (01:00Z) to 03:00 CEST; back on
# 25 October at 03:00 CEST (01:00Z) to 02:00 CET, so 02:00-03:00 happens twice:
# 00:00-01:00Z (CEST), then 01:00-02:00Z (CET).
BERLIN = [
    # -- back, 25 October
    (
        "fixed time in the repeated hour fires once, at its first occurrence",
        "30 2 * * *",
        "10-24 22:00",
        ["10-25 00:30", "10-26 01:30"],
    ),  # 02:30 CEST, 02:30 CET on the 26th
    (
        "fixed hour, wildcard minutes: the first pass only",
        "*/15 2 * * *",
        "10-24 22:00",
        ["10-25 00:00", "10-25 00:15", "10-25 00:30", "10-25 00:45", "10-26 01:00"],
    ),
    (
        "an hour list (every second hour) names times of day: 02:00 CEST only",
        "0 */2 * * *",
        "10-24 21:30",
        ["10-24 22:00", "10-25 00:00", "10-25 03:00"],
    ),  # 04:00 CET
    (
        "hourly fires on both passes: 02:00 CEST, 02:00 CET, 03:00 CET",
        "0 * * * *",
        "10-24 23:30",
        ["10-25 00:00", "10-25 01:00", "10-25 02:00"],
    ),
    (
        "*/15 keeps 15 minutes in elapsed time: 4 more fires in the repeated hour",
        "*/15 * * * *",
        "10-25 00:30",
        ["10-25 00:45", "10-25 01:00", "10-25 01:15", "10-25 01:30", "10-25 01:45", "10-25 02:00"],
    ),
    (
        "every minute: 02:59 CEST, then 02:00 CET",
        "* * * * *",
        "10-25 00:58",
        ["10-25 00:59", "10-25 01:00", "10-25 01:01"],
    ),
    (
        "every 10 seconds across the change",
        "* * * * * */10",
        "10-25 00:59:40",
        ["10-25 00:59:50", "10-25 01:00:00", "10-25 01:00:10"],
    ),
    (
        "every second: 02:59:59 CEST, then 02:00:00 CET",
        "* * * * * *",
        "10-25 00:59:58",
        ["10-25 00:59:59", "10-25 01:00:00", "10-25 01:00:01"],
    ),
    (
        "seconds are the sixth field: every second of minutes :00, :10, .. on both passes",
        "*/10 * * * * *",
        "10-25 00:50:58",
        ["10-25 00:50:59", "10-25 01:00:00", "10-25 01:00:01"],
    ),
    (
        "day of month = the day of the change, planned from January",
        "30 2 25 10 *",
        "01-01 00:00",
        ["10-25 00:30", "2027-10-25 00:30"],
    ),  # 2027-10-25 is CEST
    (
        "day of week = the day of the change",
        "30 2 * * 0",
        "10-24 12:00",
        ["10-25 00:30", "11-01 01:30"],
    ),
    # -- forward, 29 March: 02:00-03:00 does not exist
    (
        "a time in the gap fires at the first instant after it: 02:30 -> 03:00 CEST",
        "30 2 * * *",
        "03-28 23:00",
        ["03-29 01:00", "03-30 00:30"],
    ),
    (
        "02:00, 02:30 (in the gap) and 03:00 fire once, together, at 03:00 CEST",
        "0,30 2,3 * * *",
        "03-28 23:00",
        ["03-29 01:00", "03-29 01:30", "03-30 00:00"],
    ),
    (
        "hourly: 01:00 CET, 03:00 CEST (one hour apart)",
        "0 * * * *",
        "03-28 23:30",
        ["03-29 00:00", "03-29 01:00", "03-29 02:00"],
    ),
    (
        "*/15: 01:45 CET, 03:00 CEST (15 minutes apart)",
        "*/15 * * * *",
        "03-29 00:30",
        ["03-29 00:45", "03-29 01:00", "03-29 01:15"],
    ),
    (
        "every minute: 01:59 CET, 03:00 CEST",
        "* * * * *",
        "03-29 00:58",
        ["03-29 00:59", "03-29 01:00", "03-29 01:01"],
    ),
    (
        "every 10 seconds across the gap",
        "* * * * * */10",
        "03-29 00:59:40",
        ["03-29 00:59:50", "03-29 01:00:00", "03-29 01:00:10"],
    ),
    (
        "every second: 01:59:59 CET, then 03:00:00 CEST",
        "* * * * * *",
        "03-29 00:59:58",
        ["03-29 00:59:59", "03-29 01:00:00", "03-29 01:00:01"],
    ),
    (
        "day of month = the day of the change, planned from January",
        "30 2 29 3 *",
        "01-01 00:00",
        ["03-29 01:00", "2027-03-29 00:30"],
    ),  # 2027-03-29 is CEST
    (
        "day of week = the day of the change",
        "30 2 * * sun",
        "03-27 12:00",
        ["03-29 01:00", "04-05 00:30"],
    ),
]

# Lord Howe Island, 2026: clocks move by 30 minutes. Back on 5 April at 02:00
# LHDT (+11, 4 April 15:00Z) to 01:30 LHST (+10:30), so 01:30-02:00 happens
# twice: 14:30-15:00Z, then 15:00-15:30Z. Forward on 4 October at 02:00 LHST
# (3 October 15:30Z) to 02:30 LHDT: 02:00-02:30 does not exist.
LORD_HOWE = [
    # -- back, 5 April (local dates; UTC is the day before)
    (
        "fixed time in the repeated half-hour fires once, at its first occurrence",
        "45 1 * * *",
        "04-04 13:00",
        ["04-04 14:45", "04-05 15:15"],
    ),  # 01:45 LHDT; 01:45 LHST on the 6th
    (
        "a time just after the repeated half-hour fires once",
        "15 2 * * *",
        "04-04 13:00",
        ["04-04 15:45", "04-05 15:45"],
    ),  # 02:15 LHST
    (
        "fixed hour, wildcard minutes: the first pass only",
        "*/15 1 * * *",
        "04-04 13:00",
        ["04-04 14:00", "04-04 14:15", "04-04 14:30", "04-04 14:45", "04-05 14:30"],
    ),
    (
        "hourly: 01:00 LHDT, 02:00 LHST, 90 minutes apart (no :00 in the repeated half-hour)",
        "0 * * * *",
        "04-04 13:30",
        ["04-04 14:00", "04-04 15:30", "04-04 16:30"],
    ),
    (
        "fixed minute, every hour: 01:30 LHDT and 01:30 LHST both fire",
        "30 * * * *",
        "04-04 13:00",
        ["04-04 13:30", "04-04 14:30", "04-04 15:00", "04-04 16:00"],
    ),
    (
        "*/15 keeps 15 minutes in elapsed time: 2 more fires in the repeated half-hour",
        "*/15 * * * *",
        "04-04 14:20",
        ["04-04 14:30", "04-04 14:45", "04-04 15:00", "04-04 15:15", "04-04 15:30"],
    ),
    (
        "*/7 from its last fire before the change (01:56 LHDT): 01:35 LHST comes next",
        "*/7 * * * *",
        "04-04 14:56",
        ["04-04 15:05", "04-04 15:12", "04-04 15:19", "04-04 15:26", "04-04 15:30"],
    ),
    (
        "every minute: 01:59 LHDT, then 01:30 LHST",
        "* * * * *",
        "04-04 14:58",
        ["04-04 14:59", "04-04 15:00", "04-04 15:01"],
    ),
    (
        "every 10 seconds across the change",
        "* * * * * */10",
        "04-04 14:59:40",
        ["04-04 14:59:50", "04-04 15:00:00", "04-04 15:00:10"],
    ),
    (
        "every second: 01:59:59 LHDT, then 01:30:00 LHST",
        "* * * * * *",
        "04-04 14:59:58",
        ["04-04 14:59:59", "04-04 15:00:00", "04-04 15:00:01"],
    ),
    (
        "day of month = the day of the change, planned from January",
        "45 1 5 4 *",
        "01-01 00:00",
        ["04-04 14:45", "2027-04-04 15:15"],
    ),  # 2027-04-05 is LHST
    (
        "day of week = the day of the change",
        "45 1 * * sun",
        "04-03 12:00",
        ["04-04 14:45", "04-11 15:15"],
    ),
    # -- forward, 4 October
    (
        "a time in the gap fires at the first instant after it: 02:15 -> 02:30 LHDT",
        "15 2 * * *",
        "10-03 13:30",
        ["10-03 15:30", "10-04 15:15"],
    ),
    (
        "a time just before the gap fires as usual",
        "45 1 * * *",
        "10-03 13:30",
        ["10-03 15:15", "10-04 14:45"],
    ),  # 01:45 LHST, then 01:45 LHDT
    (
        "02:00 and 02:15 (in the gap) and 02:30 fire once, together, at 02:30 LHDT",
        "*/15 2 * * *",
        "10-03 13:30",
        ["10-03 15:30", "10-03 15:45", "10-04 15:00"],
    ),
    (
        "hourly: 01:00 LHST, 03:00 LHDT, 90 minutes apart (02:00 never shows)",
        "0 * * * *",
        "10-03 13:30",
        ["10-03 14:30", "10-03 16:00"],
    ),
    (
        "*/15: 01:45 LHST, 02:30 LHDT (15 minutes apart)",
        "*/15 * * * *",
        "10-03 15:00",
        ["10-03 15:15", "10-03 15:30", "10-03 15:45"],
    ),
    (
        "every minute: 01:59 LHST, 02:30 LHDT",
        "* * * * *",
        "10-03 15:28",
        ["10-03 15:29", "10-03 15:30", "10-03 15:31"],
    ),
    (
        "every 10 seconds across the gap",
        "* * * * * */10",
        "10-03 15:29:40",
        ["10-03 15:29:50", "10-03 15:30:00", "10-03 15:30:10"],
    ),
    (
        "every second: 01:59:59 LHST, then 02:30:00 LHDT",
        "* * * * * *",
        "10-03 15:29:58",
        ["10-03 15:29:59", "10-03 15:30:00", "10-03 15:30:01"],
    ),
    (
        "day of month = the day of the change, planned from January",
        "15 2 4 10 *",
        "01-01 00:00",
        ["10-03 15:30", "2027-10-03 15:15"],
    ),  # 2027-10-04 is LHDT
    (
        "day of week = the day of the change",
        "15 2 * * sun",
        "10-02 12:00",
        ["10-03 15:30", "10-10 15:15"],
    ),
]


def _table(rows):
    return pytest.mark.parametrize(
        ("expression", "after", "expected"),
        [pytest.param(*row[1:], id=f"{row[1]} | {row[0]}") for row in rows],
    )


@_table(NEW_YORK)
def test_dst_new_york(expression, after, expected):
    assert_fires("America/New_York", expression, after, expected)


@_table(BERLIN)
def test_dst_berlin(expression, after, expected):
    assert_fires("Europe/Berlin", expression, after, expected)


@_table(LORD_HOWE)
def test_dst_lord_howe(expression, after, expected):
    assert_fires("Australia/Lord_Howe", expression, after, expected)


CHANGES = [  # (zone, the local day of the change, its length in hours)
    ("America/New_York", dt.date(2026, 3, 8), 23),
    ("America/New_York", dt.date(2026, 11, 1), 25),
    ("Europe/Berlin", dt.date(2026, 3, 29), 23),
    ("Europe/Berlin", dt.date(2026, 10, 25), 25),
    ("Australia/Lord_Howe", dt.date(2026, 4, 5), 24.5),
    ("Australia/Lord_Howe", dt.date(2026, 10, 4), 23.5),
]


@pytest.mark.parametrize(("zone", "day", "hours"), CHANGES)
def test_intervals_keep_elapsed_time_through_the_whole_day_of_a_change(zone, day, hours):
    midnight = dt.datetime.combine(day, dt.time(), ZoneInfo(zone)).astimezone(UTC)
    fires, current = [], midnight - dt.timedelta(microseconds=1)
    while (current := schedule.next_after("*/15 * * * *", zone, current)) < midnight + dt.timedelta(
        hours=hours
    ):
        fires.append(current)
    assert len(fires) == hours * 4
    assert {b - a for a, b in itertools.pairwise(fires)} == {dt.timedelta(minutes=15)}


def brute_force(zone, expression, start, end):
    """The rule, instant by instant: a walk over every minute of ``[start, end]`` in UTC."""
    tz = ZoneInfo(zone)
    step = dt.timedelta(minutes=1)
    every_hour = croniter(expression).expanded[1] == ["*"]
    local_start = start.astimezone(tz).replace(tzinfo=None) - dt.timedelta(hours=3)
    local_end = local_start + (end - start) + dt.timedelta(hours=6)
    iterator, matches = croniter(expression, local_start), set()
    while (match := iterator.get_next(dt.datetime)) < local_end:
        matches.add(match)
    fires, seen, previous = [], set(), (start - step).astimezone(tz).replace(tzinfo=None)
    instant = start
    while instant <= end:
        local = instant.astimezone(tz).replace(tzinfo=None)
        if local in matches:
            if every_hour or local not in seen:  # a time of day fires at its first occurrence
                fires.append(instant)
        elif not every_hour and any(previous < t < local for t in matches):
            fires.append(instant)  # clocks went forward over a time of day
        seen.add(local)
        previous, instant = local, instant + step
    return fires


@pytest.mark.parametrize(("zone", "day", "hours"), CHANGES)
@pytest.mark.parametrize(
    "expression",
    ["0 * * * *", "*/7 * * * *", "45 * * * *", "30 1 * * *", "*/20 2 * * *", "15 1-3 * * *"],
)
def test_next_after_agrees_with_the_rule_walked_minute_by_minute(zone, day, hours, expression):
    # From a point every 13 min 7 s around the change: the first instant of the walk after it.
    change = next(
        instant
        for instant in (
            dt.datetime.combine(day, dt.time(), UTC) + dt.timedelta(minutes=30 * k)
            for k in range(-48, 48)
        )
        if instant.astimezone(ZoneInfo(zone)).utcoffset()
        != (instant - dt.timedelta(minutes=30)).astimezone(ZoneInfo(zone)).utcoffset()
    )
    start, end = change - dt.timedelta(hours=4), change + dt.timedelta(hours=5)
    fires = brute_force(zone, expression, start - dt.timedelta(hours=3), end)
    after = start
    while after < end - dt.timedelta(hours=2):
        expected = next((instant for instant in fires if instant > after), None)
        got = schedule.next_after(expression, zone, after)
        if expected is None:  # the next one is past the walk
            assert got > end, after
        else:
            assert got == expected, after
        after += dt.timedelta(minutes=13, seconds=7)


def test_plan_after_across_the_gap_is_one_minute_late_not_sixty_one():
    # New York: fired for 01:59 EST; the next minute is 03:00 EDT.
    task = PlanInput("* * * * *", "America/New_York")
    plan = schedule.plan_after(task, utc("03-08 06:59"))
    assert plan == Plan(next_run=utc("03-08 07:00"))


def test_plan_after_from_the_first_pass_into_the_second():
    # Berlin: fired for 02:59:59 CEST; the next second is 02:00:00 CET, not 03:00:00.
    task = PlanInput("* * * * * *", "Europe/Berlin")
    plan = schedule.plan_after(task, utc("10-25 00:59:59"))
    assert plan == Plan(next_run=utc("10-25 01:00:00"))


def test_plan_after_fixed_time_in_the_gap_runs_at_the_gap():
    # Berlin: a daily 02:30 fired on 28 March runs at 03:00 CEST on the 29th.
    task = PlanInput("30 2 * * *", "Europe/Berlin")
    plan = schedule.plan_after(task, utc("03-28 01:30"))
    assert plan == Plan(next_run=utc("03-29 01:00"))


def test_plan_from_now_on_the_second_pass():
    # New York, created at 01:10 EST: the day's 01:30 was at 01:30 EDT, 40 minutes ago.
    now = utc("11-01 06:10")
    assert schedule.plan_from_now(PlanInput("30 1 * * *", "America/New_York"), now) == Plan(
        next_run=utc("11-02 06:30")
    )
    # An interval goes on with the second pass.
    assert schedule.plan_from_now(PlanInput("*/15 * * * *", "America/New_York"), now) == Plan(
        next_run=utc("11-01 06:15")
    )


# --- only the documented syntax --------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("R * * * *", "'R' in the minute field is croniter's R (random), not supported"),
        ("0 R * * *", "'R' in the hour field is croniter's R (random)"),
        ("r(0-29)/5 * * * *", "croniter's R (random)"),
        ("H * * * *", "'H' in the minute field is croniter's H (hashed), not supported"),
        ("0 0 ? * *", "Quartz's ?, not supported: write *"),
        ("0 0 15W * *", "a nearest weekday (W), not supported"),
        ("0 0 * * 5L", "an L form, not supported"),
        ("0 0 * * l5", "an L form, not supported"),
        ("0 0 1-l * *", "an L form, not supported"),
        ("5/15 * * * *", "a step without a range, not supported: write */n or a-b/n"),
        ("* * * * * blursday", "not cron: an item is *, */n, a, a-b or a-b/n"),
        ("0 0 1 * 1#2", "a day-of-week with # (1#2) needs * as day-of-month"),
        ("0 0 8-14 * 1#2", "write '0 0 * * 1#2'"),
    ],
)
def test_croniter_extensions_are_refused_with_what_they_are(expression, fragment):
    with pytest.raises(ScheduleError, match=re.escape(fragment)) as info:
        schedule.validate_schedule(expression)
    assert str(info.value).startswith(f"schedule {expression!r} is not valid cron: ")


def test_r_was_drawn_again_by_every_process():
    """Why R is refused: croniter draws its value per parse (six parses, six minutes here)."""
    minutes = {croniter("R * * * *").expanded[0][0] for _ in range(50)}
    assert len(minutes) > 1


@pytest.mark.parametrize(
    "expression",
    ["0 0 * 2 1#5", "0 9 * * mon#1", "0 0 * * 1#2,1#4", "0 0 1 jan-mar *", "0 0 1-31/2 * *"],
)
def test_the_documented_syntax_is_accepted(expression):
    assert schedule.validate_schedule(expression) == expression


def test_a_fifth_weekday_of_february_is_planned_however_far_away():
    after = at(2026, 1, 1)
    instants = []
    for _ in range(3):
        after = schedule.next_after("0 0 * 2 1#5", "UTC", after)
        instants.append(after)
    assert instants == [at(2044, 2, 29), at(2072, 2, 29), at(2112, 2, 29)]  # 40 years apart
    plan = schedule.plan_from_now(PlanInput(schedule="0 0 * 2 1#5", timezone="UTC"), at(2026, 1, 1))
    assert plan == Plan(next_run=at(2044, 2, 29))
    assert schedule.last_before("0 0 * 2 1#5", "UTC", at(2110, 1, 1), at(2000, 1, 1)) == at(
        2072, 2, 29
    )


# Day-of-month and day-of-week both restricted: croniter's rule (Sisy's), either
# matches, even when one of them starts with * (Vixie cron and cronsim then
# require both). docs/schedules.md#day-of-month-and-day-of-week.
@pytest.mark.parametrize(
    ("expression", "expected_days"),
    [
        # The odd days, and the Mondays (2026-06-01 is a Monday).
        ("0 0 */2 * 1", [1, 3, 5, 7, 8, 9, 11, 13, 15, 17, 19, 21, 22, 23]),
        # The 13th, and the Fridays.
        ("0 0 13 * 5", [5, 12, 13, 19, 26]),
        # Only one restricted: that one alone.
        ("0 0 * * 1", [1, 8, 15, 22, 29]),
        ("0 0 */10 * *", [1, 11, 21]),
        # A # form: its days alone (day-of-month must be *).
        ("0 0 * * 1#2", [8]),
    ],
)
def test_the_day_fields_rule(expression, expected_days):
    after, days = at(2026, 5, 31, 12), []
    while True:
        after = schedule.next_after(expression, "UTC", after)
        if after.month != 6 or len(days) == len(expected_days):
            break
        days.append(after.day)
    assert days == expected_days
