"""Calendar periods in a stated timezone, as half-open UTC instants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Period:
    """``[start, end)`` of a calendar month in ``tz``."""

    label: str
    start: datetime
    end: datetime
    tz: ZoneInfo

    @property
    def days(self) -> list[date]:
        """Calendar days of the period, in its timezone."""
        first = self.start.astimezone(self.tz).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(self.tz).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def month_period(month: str, tz: ZoneInfo) -> Period:
    """The calendar month ``YYYY-MM`` in ``tz``.

    Example:
        ``month_period("2026-10", ZoneInfo("Asia/Shanghai")).start`` is 2026-09-30 16:00 UTC.
    """
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=tz)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return Period(month, start.astimezone(UTC), end.astimezone(UTC), tz)


def previous_month(now: datetime, tz: ZoneInfo) -> str:
    """``YYYY-MM`` of the month before the one containing ``now`` in ``tz``."""
    local = now.astimezone(tz)
    first = local.replace(day=1)
    prev = first - timedelta(days=1)
    return f"{prev.year:04d}-{prev.month:02d}"


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """Midnight of ``day`` in ``tz``, as a UTC instant."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
