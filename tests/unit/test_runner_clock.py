"""A worker's estimate of the database's clock (runner.DatabaseClock), given its readings.

The runner waits for a job's instant on this estimate: the database's clock
read by one query, placed at the midpoint of its round trip on this process's
monotonic clock. Here the readings are given, no query is sent.
"""

import pytest

from sisy_pg.runner import _CLOCK_REFRESH, DatabaseClock

DATABASE_NOW = 1_780_000_000.0  # epoch seconds, as sisy's database_now query answers
SENT, RECEIVED = 50.0, 50.5  # this process's monotonic clock around the query


def measured_clock() -> DatabaseClock:
    clock = DatabaseClock()
    clock.measured(DATABASE_NOW, SENT, RECEIVED)
    return clock


def test_the_database_s_reading_is_placed_at_the_midpoint_of_the_round_trip():
    clock = measured_clock()
    midpoint = (SENT + RECEIVED) / 2
    assert clock.seconds_left(DATABASE_NOW, midpoint) == pytest.approx(0.0)
    assert clock.seconds_left(DATABASE_NOW + 5, RECEIVED) == pytest.approx(
        5 - (RECEIVED - midpoint)
    )


def test_the_time_left_follows_the_monotonic_clock_and_goes_below_zero_once_past():
    clock = measured_clock()
    instant = DATABASE_NOW + 10
    now = RECEIVED + 3
    assert clock.seconds_left(instant, now) - clock.seconds_left(instant, now + 4) == (
        pytest.approx(4)
    )
    assert clock.seconds_left(DATABASE_NOW - 1, RECEIVED) < 0


def test_a_new_reading_replaces_the_estimate():
    clock = measured_clock()
    clock.measured(DATABASE_NOW + 2, SENT + 1, SENT + 1)  # the database's clock stepped a second
    assert clock.seconds_left(DATABASE_NOW + 2, SENT + 1) == pytest.approx(0.0)


def test_a_clock_never_measured_is_stale():
    assert DatabaseClock().stale(RECEIVED)


def test_a_reading_is_trusted_for_the_refresh_period_from_its_answer():
    clock = measured_clock()
    assert not clock.stale(RECEIVED)
    assert not clock.stale(RECEIVED + _CLOCK_REFRESH - 0.001)
    assert clock.stale(RECEIVED + _CLOCK_REFRESH + 0.001)


def test_a_forgotten_reading_is_stale_at_once():
    """The database answered 'early': the estimate is wrong, measure again at the next wait."""
    clock = measured_clock()
    clock.forget()
    assert clock.stale(RECEIVED)
