"""Pause's command line: the instants and delays it reads."""

import datetime as dt
import zoneinfo

import pytest

from sisy_pg.management.commands.sisy import parse_when

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def test_the_command_line_reads_instants_and_delays():
    assert parse_when("90s", PARIS) == dt.timedelta(seconds=90)
    assert parse_when("+1d12h", PARIS) == dt.timedelta(days=1, hours=12)
    assert parse_when("2h 30m", PARIS) == dt.timedelta(hours=2, minutes=30)
    assert parse_when("2026-12-24 18:00", PARIS) == dt.datetime(2026, 12, 24, 18, tzinfo=PARIS)
    assert parse_when("2026-12-24T17:00Z", PARIS) == dt.datetime(
        2026, 12, 24, 17, tzinfo=dt.timezone.utc
    )
    for typo in ("tomorrow", "2h later", "12/24"):
        with pytest.raises(ValueError, match="not an instant"):
            parse_when(typo, PARIS)
