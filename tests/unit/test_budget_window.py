"""Budget windows: parsing, epoch-aligned durations, calendar periods in a zone (DST too)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from holdfast.budgets.window import WindowError, check_window, check_zone, span_at


@pytest.mark.parametrize("window", ["1m", "1h", "1d", "15m", "30s", "day", "month", "7d"])
def test_good_windows(window: str) -> None:
    assert check_window(window) == window


@pytest.mark.parametrize("window", ["", "0m", "-1h", "1w", "1.5h", "5s", "400d", "weekly", "1 h"])
def test_bad_windows_name_the_choices(window: str) -> None:
    with pytest.raises(WindowError):
        check_window(window)


def test_unknown_zone() -> None:
    with pytest.raises(WindowError, match="time zone"):
        check_zone("Mars/Olympus")
    assert check_zone("") == "UTC"


def test_duration_windows_are_epoch_aligned() -> None:
    span = span_at("1h", "UTC", 7200 + 1800.5)
    assert (span.start, span.end) == (7200.0, 10800.0)
    assert span.id == "1h@2"
    assert span.retry_after(10799.2) == 1
    assert span.retry_after(7200.0) == 3600


def test_calendar_day_in_a_zone() -> None:
    tz = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 5, 23, 30, tzinfo=tz).timestamp()
    span = span_at("day", "America/New_York", now)
    assert span.id == "day@2026-03-05"
    assert datetime.fromtimestamp(span.start, tz) == datetime(2026, 3, 5, tzinfo=tz)
    assert span.end - span.start == 86400


def test_calendar_day_across_dst_is_23_hours() -> None:
    tz = ZoneInfo("Europe/Paris")
    now = datetime(2026, 3, 29, 12, 0, tzinfo=tz).timestamp()  # spring forward
    span = span_at("day", "Europe/Paris", now)
    assert span.end - span.start == 23 * 3600


def test_calendar_month_and_year_end() -> None:
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    span = span_at("month", "UTC", now)
    assert span.id == "month@2026-12"
    assert span.end == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
