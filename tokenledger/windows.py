"""Spend windows: calendar periods in a stated timezone and rolling windows of buckets. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from tokenledger.event_time import epoch_us

Period = Literal["day", "month", "rolling_1h", "rolling_24h"]

ROLLING: dict[str, tuple[timedelta, timedelta]] = {
    # window length, bucket width: bucket granularity bounds the error at the window's edge
    "rolling_1h": (timedelta(hours=1), timedelta(minutes=1)),
    "rolling_24h": (timedelta(hours=24), timedelta(minutes=15)),
}


@dataclass(frozen=True)
class CalendarWindow:
    """``[start, end)`` of the calendar period containing an instant, as UTC instants."""

    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        """Stable id of the period (its UTC start)."""
        return self.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def calendar_window(at: datetime, period: Literal["day", "month"], tz: ZoneInfo) -> CalendarWindow:
    """The day or month containing ``at`` in ``tz``.

    Raises:
        ValueError: ``at`` is naive.
    """
    if at.tzinfo is None:
        raise ValueError("timezone-aware datetimes only")
    local = at.astimezone(tz)
    if period == "day":
        start = datetime(local.year, local.month, local.day, tzinfo=tz)
        nxt = start.date() + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    else:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        end = datetime(local.year + (local.month == 12), local.month % 12 + 1, 1, tzinfo=tz)
    return CalendarWindow(start.astimezone(UTC), end.astimezone(UTC))


def window_at(at_s: int, period: Literal["day", "month"], tz: ZoneInfo) -> KnownWindow:
    """:func:`calendar_window` of the instant ``at_s`` (epoch seconds): its edges in epoch seconds, its key.

    Remembers the last window per period and zone (shared with :func:`window_of`): a sparse
    backfill opens a new minute (and misses every per-minute cache) at nearly every event,
    while its period rarely changes.
    """
    zone = str(tz)  # its IANA name
    last = _LAST.get((period, zone))
    if last is not None and last[0] <= at_s < last[1]:
        return last
    return _remember(calendar_window(datetime.fromtimestamp(at_s, UTC), period, tz), period, zone)


def window_of(at: datetime, period: Literal["day", "month"], zone: str) -> KnownWindow:
    """:func:`window_at` for an aware datetime and a zone's IANA name."""
    last = _LAST.get((period, zone))
    if last is not None and last[3].start <= at < last[3].end:
        return last
    return _remember(calendar_window(at, period, ZoneInfo(zone)), period, zone)


def _remember(window: CalendarWindow, period: str, zone: str) -> KnownWindow:
    found = _LAST[(period, zone)] = (
        epoch_us(window.start) // 1_000_000,
        epoch_us(window.end) // 1_000_000,
        window.key,
        window,
    )
    return found


KnownWindow = tuple[int, int, str, CalendarWindow]  # start and end (epoch s), key, the window
# Per (period, zone name): the last window computed.
_LAST: dict[tuple[str, str], KnownWindow] = {}


def bucket_start(at: datetime, width: timedelta) -> int:
    """Epoch seconds of the bucket containing ``at``."""
    step = int(width.total_seconds())
    return int(at.timestamp()) // step * step


@dataclass
class RollingSum:
    """Sum over the last ``length`` of time, kept in buckets of ``width``.

    ``add`` accepts late events as long as their bucket is still inside the window.
    """

    length: timedelta
    width: timedelta
    buckets: dict[int, int] = field(default_factory=dict)

    def add(self, at: datetime, nanos: int, now: datetime) -> None:
        """Add spend at ``at``; drop buckets that left the window at ``now``."""
        b = bucket_start(at, self.width)
        if b > self._horizon(now):
            self.buckets[b] = self.buckets.get(b, 0) + nanos
        self.prune(now)

    def total(self, now: datetime) -> int:
        """Spend in ``(now - length, now]`` at bucket granularity."""
        horizon = self._horizon(now)
        return sum(v for b, v in self.buckets.items() if b > horizon)

    def _horizon(self, now: datetime) -> int:
        return bucket_start(now - self.length, self.width)

    def prune(self, now: datetime) -> None:
        """Forget buckets that left the window at ``now``."""
        horizon = self._horizon(now)
        for b in [b for b in self.buckets if b <= horizon]:
            del self.buckets[b]
