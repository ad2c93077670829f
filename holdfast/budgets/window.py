"""Budget windows: parsing, and which window an instant falls in. Pure, no I/O.

A window is either a rolling duration (``1m``, ``15m``, ``1h``, ``1d``...) or a calendar period
(``day``, ``month``) in a time zone. Calendar windows follow the wall clock of their zone (a
``day`` in Europe/Paris is 23 or 25 hours around DST changes) and everything starts afresh
when one ends. Duration windows roll (see holdfast.budget_rolling: spend counts for one window
length after its admission); for them ``span_at`` gives *epochs* of the window's length aligned
to the Unix epoch, which only name the generation of the fleet's quota slices. Every sidecar
and configsvc replica computes the same span id from its clock without talking to anyone,
which is what lets a fleet share one budget through etcd.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

CALENDAR: Final = frozenset({"day", "month"})
UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_WINDOW_SECONDS: Final = 10
MAX_WINDOW_SECONDS: Final = 366 * 86400
_DURATION_RE: Final = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")


class WindowError(ValueError):
    """A window or time zone that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Span:
    """One occurrence of a window: ``id`` is the same for every process at the same time."""

    id: str
    start: float
    end: float

    def retry_after(self, now: float) -> int:
        """Whole seconds until the window ends (at least 1), for ``Retry-After``."""
        return max(1, int(self.end - now + 0.999))


def check_window(window: str) -> str:
    if window in CALENDAR:
        return window
    match = _DURATION_RE.fullmatch(window)
    if match is None:
        raise WindowError(
            f"unknown window {window!r}: use a duration like 1m, 1h, 1d (units s, m, h, d) "
            "or a calendar period: day, month"
        )
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise WindowError(
            f"window {window!r} must last between {MIN_WINDOW_SECONDS}s and "
            f"{MAX_WINDOW_SECONDS // 86400} days"
        )
    return window


def _zone(name: str) -> tzinfo:
    # zoneinfo is imported here: it loads sysconfig's build data (~0.9 MB resident), and only
    # a zone other than UTC (the default) needs the tz database.
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def check_zone(zone: str) -> str:
    if not zone or zone == "UTC":
        return "UTC"
    from zoneinfo import ZoneInfoNotFoundError

    try:
        _zone(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise WindowError(f"unknown time zone {zone!r} (use an IANA name such as UTC)") from exc
    return zone


def duration_seconds(window: str) -> int | None:
    match = _DURATION_RE.fullmatch(window)
    return None if match is None else int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def is_rolling(window: str) -> bool:
    return _DURATION_RE.fullmatch(window) is not None


def span_at(window: str, zone: str, now: float) -> Span:
    """The occurrence of ``window`` (in ``zone`` for calendar windows) that contains ``now``."""
    seconds = duration_seconds(window)
    if seconds is not None:
        index = int(now // seconds)
        return Span(f"{window}@{index}", float(index * seconds), float((index + 1) * seconds))
    if window not in CALENDAR:
        raise WindowError(f"unknown window {window!r}")
    tz = _zone(zone or "UTC")
    local = datetime.fromtimestamp(now, tz)
    if window == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = start + timedelta(days=1)  # wall-clock arithmetic: next local midnight
        label = start.strftime("%Y-%m-%d")
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start + timedelta(days=32)).replace(day=1)
        label = start.strftime("%Y-%m")
    # Re-resolving through UTC fixes the offset when midnight is on the other side of a DST jump.
    start_ts = start.replace(tzinfo=tz).astimezone(UTC).timestamp()
    end_ts = following.replace(tzinfo=tz).astimezone(UTC).timestamp()
    return Span(f"{window}@{label}", start_ts, end_ts)
