"""Backfill's arithmetic (sisy_pg.backfill): the instants of a range, the limit, the operator's words."""

import datetime as dt
import zoneinfo

import pytest

from sisy_pg.backfill import BackfillError, instants_between, parse_when

UTC = dt.timezone.utc


PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def utc(text):
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_instants_of_a_range_both_ends_included_within_the_task_window():
    instants = instants_between(
        "*/15 * * * *", "UTC", utc("2026-03-01 10:00"), utc("2026-03-01 11:00"), limit=10
    )
    assert instants == [
        utc(f"2026-03-01 {t}") for t in ("10:00", "10:15", "10:30", "10:45", "11:00")
    ]
    windowed = instants_between(
        "*/15 * * * *",
        "UTC",
        utc("2026-03-01 10:00"),
        utc("2026-03-01 11:00"),
        limit=10,
        start_running=utc("2026-03-01 10:10"),
        end_running=utc("2026-03-01 10:40"),
    )
    assert windowed == [utc("2026-03-01 10:15"), utc("2026-03-01 10:30")]


def test_instants_follow_the_time_zone_across_daylight_saving():
    # 02:30 in Paris does not exist on 2026-03-29: the planner runs it at 03:00.
    instants = instants_between(
        "30 2 * * *", "Europe/Paris", utc("2026-03-27 00:00"), utc("2026-03-30 12:00"), limit=10
    )
    assert [i.astimezone(PARIS).strftime("%d %H:%M") for i in instants] == [
        "27 02:30",
        "28 02:30",
        "29 03:00",
        "30 02:30",
    ]


def test_a_range_of_more_instants_than_the_limit_is_refused():
    with pytest.raises(BackfillError, match="more than 4 instant"):
        instants_between(
            "* * * * *", "UTC", utc("2026-03-01 10:00"), utc("2026-03-01 10:04"), limit=4
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", utc("2026-03-01 12:00")),
        ("5m", utc("2026-03-01 11:55")),
        ("2h ago", utc("2026-03-01 10:00")),
        ("-1d12h", utc("2026-02-28 00:00")),
        ("2026-03-01 09:30", utc("2026-03-01 08:30")),  # Paris, without an offset
        ("2026-03-01T09:30:00Z", utc("2026-03-01 09:30")),
    ],
)
def test_when_an_operator_types_it(text, expected):
    assert parse_when(text, PARIS, utc("2026-03-01 12:00")) == expected


def test_when_that_is_no_instant_says_what_is():
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when("yesterday", UTC, utc("2026-03-01 12:00"))
