"""kbackup.times: the one way times are stored and parsed, and durations shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kbackup.times import format_duration, iso, parse_iso, utcnow


def test_a_time_is_stored_in_utc_with_whole_seconds_and_z() -> None:
    paris = timezone(timedelta(hours=1))
    assert iso(datetime(2026, 11, 23, 13, 0, 5, 999_000, tzinfo=paris)) == "2026-11-23T12:00:05Z"
    assert iso(None) is None


def test_stored_and_offset_times_parse_back_aware() -> None:
    assert parse_iso("2026-11-23T12:00:05Z") == datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    assert parse_iso("2026-11-23T13:00:05+01:00") == datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    now = utcnow().replace(microsecond=0)
    assert parse_iso(iso(now)) == now and now.tzinfo is UTC


def test_no_time_is_none_and_a_bad_one_is_an_error() -> None:
    assert parse_iso(None) is None and parse_iso("") is None
    with pytest.raises(ValueError):
        parse_iso("yesterday")


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (45.9, "45s"), (60, "1m"), (187, "3m07s"), (660, "11m"), (3600, "1h"),
    (7800, "2h10m"), (30 * 3600 + 60, "30h01m"), (26 * 3600, "26h"), (71 * 3600, "71h"),
    (72 * 3600, "3d"), (8 * 86400 + 18 * 3600 + 59, "8d18h"), (9 * 86400, "9d"),
    (-90, "-1m30s"), (None, "-"),
])
def test_a_duration_shows_its_two_largest_units(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown
