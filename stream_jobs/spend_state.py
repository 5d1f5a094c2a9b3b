"""Per-key spend state kept in Faust tables: pure transitions on plain JSON-able dicts.

One table entry per ``tenant|dimension=value`` holds that key's spend in its current
calendar day and month (budget timezone) and in rolling 1-minute buckets for the last hour,
plus hourly buckets for spike detection. Old periods are dropped as time moves on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tokenledger.windows import ROLLING, RollingSum, bucket_start, calendar_window

HOURLY_KEEP = timedelta(hours=49)
DIMENSIONS = ("tenant", "user", "department", "project", "model", "feature", "api_key")


def labels_of(priced: Any) -> dict[str, str]:
    """A priced event's attribution by dimension (absent labels as ``""``), the model included."""
    return labels_of_event(priced.event)


def labels_of_event(event: Any) -> dict[str, str]:
    """A usage event's attribution by dimension (absent labels as ``""``), the model included."""
    lb = event.data.labels
    return {
        "tenant": lb.tenant,
        "user": lb.user or "",
        "department": lb.department or "",
        "project": lb.project or "",
        "feature": lb.feature or "",
        "environment": lb.environment or "",
        "api_key": lb.api_key or "",
        "model": event.data.model,
    }


def state_key(tenant: str, dimension: str, value: str) -> str:
    """Table key of one dimension value of a tenant."""
    return f"{tenant}|{dimension}={value}"


@dataclass(frozen=True)
class When:
    """Everything about an instant that a fold needs, computed once per event."""

    at: datetime
    day: str
    month: str
    minute: int
    hour: int

    @classmethod
    def of(cls, at: datetime, tz: ZoneInfo) -> When:
        """Calendar keys in ``tz`` and bucket starts of ``at``.

        Every instant of one UTC minute lies in the same local day and month (timezone
        offsets are whole minutes), so the keys are computed once per minute and reused.
        """
        minute = int(at.timestamp()) // 60
        cached = _KEYS.get((minute, tz))
        if cached is None:
            cached = (
                calendar_window(at, "day", tz).key,
                calendar_window(at, "month", tz).key,
                bucket_start(at, ROLLING["rolling_1h"][1]),
                bucket_start(at, timedelta(hours=1)),
            )
            if len(_KEYS) >= _KEYS_MAX:
                _KEYS.clear()
            _KEYS[(minute, tz)] = cached
        return cls(at, *cached)


_KEYS: dict[tuple[int, ZoneInfo], tuple[str, str, int, int]] = {}
_KEYS_MAX = 100_000  # ~70 days of minutes; cleared when full
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def keys_of_us(at_us: int, tz: ZoneInfo) -> tuple[str, str, int, int]:
    """``(day, month, minute bucket, hour bucket)`` of an instant in epoch µs (:class:`When`'s keys, no datetime)."""
    cached = _KEYS.get((at_us // 60_000_000, tz))
    if cached is None:
        w = When.of(_EPOCH + timedelta(microseconds=at_us), tz)
        cached = (w.day, w.month, w.minute, w.hour)
    return cached


_HOUR_S = 3600
_HOURLY_KEEP_S = int(HOURLY_KEEP.total_seconds())


def add_spend(state: dict[str, Any] | None, when: When, nanos: int) -> dict[str, Any]:
    """Fold one priced request into a key's state (returns a new dict).

    Keeps the current and previous calendar day and month (late events within a period),
    minute buckets of the last hour and hour buckets of the last 49 hours (for spikes).

    Args:
        state: The table value (``None`` for a new key).
        when: The event time, pre-computed (see :class:`When`).
        nanos: Cost, nano-USD.
    """
    fold = SpendFold(state)
    fold.add(when, nanos)
    return fold.state()


def add_spend_many(state: dict[str, Any] | None, items: list[tuple[When, int]]) -> dict[str, Any]:
    """Fold several requests in order: equal to :func:`add_spend` applied to each in turn."""
    fold = SpendFold(state)
    for when, nanos in items:
        fold.add(when, nanos)
    return fold.state()


class SpendFold:
    """A key's state being folded into, in place: its dicts are copied once, not once per event.

    Bucket keys and window edges are epoch seconds with ten digits (2001-09-11 .. 2286-11-20),
    so comparing them as strings compares them as numbers: no key is parsed, and a dict is
    rebuilt only when one of its buckets actually fell out of its window. Instants outside that
    range take the slower path that parses keys.
    """

    def __init__(self, state: dict[str, Any] | None) -> None:
        if state is None:
            state = {"day": {}, "month": {}, "minute": {}, "hour": {}}
        self.day: dict[str, int] = dict(state["day"])
        self.month: dict[str, int] = dict(state["month"])
        self.minute: dict[str, int] = dict(state["minute"])
        self.hour: dict[str, int] = dict(state["hour"])
        m, h = self.minute, self.hour
        self._mmin, self._mmax = (min(m), max(m)) if m else ("", "")
        self._hmin, self._hmax = (min(h), max(h)) if h else ("", "")
        # A key's buckets span at most 49 hours, so keys of two lengths can only meet at the
        # edge of the ten-digit range: checking the smallest and largest keys is enough.
        self._ten = (not m or len(self._mmin) == len(self._mmax) == 10) and (
            not h or len(self._hmin) == len(self._hmax) == 10
        )

    def state(self) -> dict[str, Any]:
        """The folded state (a new dict)."""
        return {"day": self.day, "month": self.month, "minute": self.minute, "hour": self.hour}

    def add(self, when: When, nanos: int) -> None:
        """Fold one request in."""
        self.add_keys((when.day, when.month, when.minute, when.hour), nanos)

    def add_keys(self, keys: tuple[str, str, int, int], nanos: int) -> None:
        """Fold one request in, given its calendar keys and bucket starts (see :func:`keys_of_us`)."""
        when_day, when_month, when_minute, when_hour = keys
        day, month = self.day, self.month
        day[when_day] = day.get(when_day, 0) + nanos
        month[when_month] = month.get(when_month, 0) + nanos
        if len(day) > 2:
            self.day = dict(sorted(day.items())[-2:])
        if len(month) > 2:
            self.month = dict(sorted(month.items())[-2:])
        if not (self._ten and when_hour >= _TEN_DIGITS + _HOURLY_KEEP_S and when_minute < _ELEVEN_DIGITS):
            self._add_by_value(when_minute, when_hour, nanos)
            return
        minute, mmin, mmax = self.minute, self._mmin, self._mmax
        key = str(when_minute)
        newest = key if not minute or key > mmax else mmax
        oldest_kept = str(int(newest) - _HOUR_S)
        if key > oldest_kept:
            minute[key] = minute.get(key, 0) + nanos
            mmin = key if not mmin or key < mmin else mmin
        if mmin and mmin <= oldest_kept:
            minute = self.minute = {k: v for k, v in minute.items() if k > oldest_kept}
            mmin = min(minute) if minute else ""
        self._mmin, self._mmax = mmin, newest if minute else ""
        hour, hmin = self.hour, self._hmin
        hkey = str(when_hour)
        hour[hkey] = hour.get(hkey, 0) + nanos
        oldest_hour = str(when_hour - _HOURLY_KEEP_S)
        if hmin and hmin <= oldest_hour:
            hour = self.hour = {k: v for k, v in hour.items() if k > oldest_hour}
            hmin = min(hour)
        else:
            hmin = hkey if not hmin or hkey < hmin else hmin
        self._hmin, self._hmax = hmin, max(self._hmax, hkey) if self._hmax else hkey

    def _add_by_value(self, when_minute: int, when_hour: int, nanos: int) -> None:
        """The bucket update comparing parsed keys (instants outside the ten-digit epoch range)."""
        minute = self.minute
        newest = max([when_minute, *(int(k) for k in minute)])
        key = str(when_minute)
        if when_minute > newest - _HOUR_S:
            minute[key] = minute.get(key, 0) + nanos
        self.minute = {k: v for k, v in minute.items() if int(k) > newest - _HOUR_S}
        hour = self.hour
        hkey = str(when_hour)
        hour[hkey] = hour.get(hkey, 0) + nanos
        self.hour = {k: v for k, v in hour.items() if int(k) > when_hour - _HOURLY_KEEP_S}
        m, h = self.minute, self.hour
        self._mmin, self._mmax = (min(m), max(m)) if m else ("", "")
        self._hmin, self._hmax = (min(h), max(h)) if h else ("", "")
        self._ten = (not m or len(self._mmin) == len(self._mmax) == 10) and (
            not h or len(self._hmin) == len(self._hmax) == 10
        )


_TEN_DIGITS, _ELEVEN_DIGITS = 10**9, 10**10


def spent(state: dict[str, Any] | None, period: str, at: datetime, tz: ZoneInfo) -> int:
    """Spend of the key in the budget period containing ``at`` (nano-USD)."""
    if not state:
        return 0
    if period in ("day", "month"):
        return int(state[period].get(calendar_window(at, period, tz).key, 0))  # type: ignore[arg-type]
    length, width = ROLLING["rolling_1h"] if period == "rolling_1h" else (timedelta(hours=24), timedelta(hours=1))
    source = state["minute"] if period == "rolling_1h" else state["hour"]
    return RollingSum(length, width, {int(k): v for k, v in source.items()}).total(at)


class Progress:
    """Where a worker is in event time and when it last saw an event (process memory)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.watermark: datetime | None = None
        self.last_event_at = monotonic()

    def seen(self, at: datetime) -> None:
        """Record an event of time ``at``."""
        self.watermark = at if self.watermark is None else max(self.watermark, at)
        self.last_event_at = self._monotonic()

    def live(self, now: datetime, idle_s: float = 60.0, lag: timedelta = timedelta(minutes=5)) -> bool:
        """Caught up with the wall clock, or idle: not replaying a backlog of past events."""
        caught_up = self.watermark is not None and self.watermark >= now - lag
        return caught_up or self._monotonic() - self.last_event_at > idle_s
