"""Per-key spend state kept in Faust tables: pure transitions on plain JSON-able dicts.

One table entry per ``tenant|dimension=value`` holds that key's spend in its current
calendar day and month (budget timezone) and in rolling 1-minute buckets for the last hour,
plus hourly buckets for spike detection. Old periods are dropped as time moves on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any
from zoneinfo import ZoneInfo

from tokenledger.minute_cache import MinuteCache
from tokenledger.windows import ROLLING, bucket_start, window_at

HOURLY_KEEP = timedelta(hours=49)
DIMENSIONS = ("tenant", "user", "department", "project", "model", "feature", "api_key")


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
        by_minute = _KEYS.get(tz)
        cached = by_minute.get(minute) if by_minute is not None else None
        if cached is None:
            cached = _KEYS.remember(
                tz,
                minute,
                (
                    *_day_month(minute, tz),
                    bucket_start(at, ROLLING["rolling_1h"][1]),
                    bucket_start(at, timedelta(hours=1)),
                ),
            )
        return cls(at, *cached)


_KEYS_MAX = 100_000  # ~70 days of minutes; cleared when full
_KEYS: MinuteCache[ZoneInfo, tuple[str, str, int, int]] = MinuteCache(_KEYS_MAX)  # When.of, per zone and minute
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_S = 3600
_HOURLY_KEEP_S = int(HOURLY_KEEP.total_seconds())


def keys_of_us(at_us: int, tz: ZoneInfo) -> FoldKeys:
    """What :meth:`SpendFold.add_keys` needs of an instant in epoch µs (no datetime built).

    Cached per UTC minute: the day and month keys, the minute and hour bucket starts, as
    ``int`` and as ``str``, and the window edges (as ``str``) they imply.
    """
    minute = at_us // 60_000_000
    by_minute = _FOLD_KEYS.get(tz)
    found = by_minute.get(minute) if by_minute is not None else None
    if found is None:
        at_s = minute * 60
        found = _FOLD_KEYS.remember(tz, minute, fold_keys(*_day_month(minute, tz), at_s, at_s // _HOUR_S * _HOUR_S))
    return found


def _day_month(minute: int, tz: ZoneInfo) -> tuple[str, str]:
    """The keys of the local day and month holding UTC minute ``minute`` (epoch minutes)."""
    at_s = minute * 60
    return window_at(at_s, "day", tz)[2], window_at(at_s, "month", tz)[2]


# (day, month, minute bucket, hour bucket, their str, minute edge str, hour edge str)
FoldKeys = tuple[str, str, int, int, str, str, str, str]
_FOLD_KEYS: MinuteCache[ZoneInfo, FoldKeys] = MinuteCache(_KEYS_MAX)


def fold_keys(day: str, month: str, minute: int, hour: int) -> FoldKeys:
    """:data:`FoldKeys` from calendar keys and bucket starts."""
    return (day, month, minute, hour, str(minute), str(hour), str(minute - _HOUR_S), str(hour - _HOURLY_KEEP_S))


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
    so comparing them as strings compares them as numbers: no key is parsed. Buckets that fall
    out of their window are dropped lazily, when :meth:`state` is read or an hour older than
    the last one arrives: one rebuild per read instead of one per new minute. The result is the
    one of dropping them request by request (``tests/unit/test_fast_fold.py``): the minute edge
    only moves forward, and the hour edge does too while hours come in order. Instants outside
    the ten-digit range take the slower path that parses keys.
    """

    def __init__(self, state: dict[str, Any] | None, keep_days: int = 2, keep_months: int = 2) -> None:
        self._keep_days, self._keep_months = keep_days, keep_months
        if state is None:
            state = {"day": {}, "month": {}, "minute": {}, "hour": {}}
        self.day: dict[str, int] = dict(state["day"])
        self.month: dict[str, int] = dict(state["month"])
        self.minute: dict[str, int] = dict(state["minute"])
        self.hour: dict[str, int] = dict(state["hour"])
        m, h = self.minute, self.hour
        self._mmin, self._mmax = (min(m), max(m)) if m else ("", "")
        self._hmin, self._hmax = (min(h), max(h)) if h else ("", "")
        self._h_edge = ""  # hour buckets at or below it are out of the 49 hours (pending drop)
        self._h_last = ""  # hour bucket of the last request folded in
        # A key's buckets span at most 49 hours, so keys of two lengths can only meet at the
        # edge of the ten-digit range: checking the smallest and largest keys is enough.
        self._ten = (not m or len(self._mmin) == len(self._mmax) == 10) and (
            not h or len(self._hmin) == len(self._hmax) == 10
        )
        # Minute buckets at or below it are out of the rolling hour (dropped lazily; compared as
        # strings, so only with ten-digit keys).
        edge = int(self._mmax) - _HOUR_S if self._mmax and self._ten else 0
        self._m_edge = str(edge) if edge >= _TEN_DIGITS else ""

    def state(self) -> dict[str, Any]:
        """The folded state (a new dict; the fold goes on with copies of its own)."""
        self._drop_minutes()
        self._drop_hours()
        self.minute, self.hour = dict(self.minute), dict(self.hour)
        self.day, self.month = dict(self.day), dict(self.month)
        return {"day": self.day, "month": self.month, "minute": self.minute, "hour": self.hour}

    def view(self) -> dict[str, Any]:
        """The folded state so far, not copied (read it before the next :meth:`add`)."""
        self._drop_minutes()
        self._drop_hours()
        return {"day": self.day, "month": self.month, "minute": self.minute, "hour": self.hour}

    def _drop_minutes(self) -> None:
        edge = self._m_edge
        if edge and self._mmin and self._mmin <= edge:
            self.minute = {k: v for k, v in self.minute.items() if k > edge}
            self._mmin = min(self.minute) if self.minute else ""

    def _drop_hours(self) -> None:
        edge = self._h_edge
        if edge and self._hmin and self._hmin <= edge:
            self.hour = {k: v for k, v in self.hour.items() if k > edge}
            self._hmin = min(self.hour) if self.hour else ""
        self._h_edge = ""

    def add(self, when: When, nanos: int) -> None:
        """Fold one request in."""
        self.add_keys(fold_keys(when.day, when.month, when.minute, when.hour), nanos)

    def add_entries(self, entries: Sequence[tuple[int, int, int, int]], tz: ZoneInfo) -> dict[int, int]:  # noqa: PLR0912
        """Fold delta entries ``(raw partition, position, epoch µs, nano-USD)`` in order.

        Consecutive entries of one UTC minute share every key, and folding them one by one
        equals folding their sum once, so each run of a minute is folded once: at a high rate
        most of a batch's entries fall in the same minute. Likewise consecutive runs of one hour,
        day and month add to those buckets once (each bucket dict is independent of the others):
        a busy key's runs are minutes apart but mostly in one hour. Returns the latest event time
        (µs) per hour bucket folded into.
        """
        latest: dict[int, int] = {}
        run_minute: int | None = None
        run_us = run_nanos = 0
        # The hour, day and month being summed: (day, month, hour, hour str, hour edge str), nanos, latest µs.
        held: tuple[str, str, int, str, str] | None = None
        held_nanos = held_us = 0
        ten_from, ten_to = _TEN_DIGITS + _HOURLY_KEEP_S, _ELEVEN_DIGITS
        # One loop, no helper call per run: this is the spend stage's hottest code.
        for entry in chain(entries, _END):
            if entry is not None:
                at_us = entry[2]
                minute = at_us // 60_000_000
                if minute == run_minute:
                    if at_us > run_us:  # noqa: PLR1730 - max() is a call: slower here
                        run_us = at_us
                    run_nanos += entry[3]
                    continue
            if run_minute is not None:  # a run ended: its minute now, its hour, day and month later
                keys = keys_of_us(run_us, tz)
                when_hour = keys[3]
                if self._ten and when_hour >= ten_from and keys[2] < ten_to:
                    # _add_minute, inlined: the call per run cost ~0.6 µs an event on the bench's entries
                    key = keys[4]
                    if not self._mmax or key > self._mmax:
                        self._mmax = key
                        self._m_edge = keys[6]
                    if key > self._m_edge:
                        by_minute = self.minute
                        by_minute[key] = by_minute.get(key, 0) + run_nanos
                        if not self._mmin or key < self._mmin:
                            self._mmin = key
                    if held is not None and held[2] == when_hour and held[0] == keys[0] and held[1] == keys[1]:
                        held_nanos += run_nanos
                        if run_us > held_us:  # noqa: PLR1730
                            held_us = run_us
                    else:
                        if held is not None:
                            self._add_held(held, held_nanos, held_us, latest)
                        held, held_nanos, held_us = (keys[0], keys[1], when_hour, keys[5], keys[7]), run_nanos, run_us
                else:  # outside the ten-digit range: the general path, in order
                    if held is not None:
                        self._add_held(held, held_nanos, held_us, latest)
                        held = None
                    self.add_keys(keys, run_nanos)
                    _note_latest(latest, when_hour, run_us)
            if entry is not None:
                run_minute, run_us, run_nanos = minute, at_us, entry[3]
        if held is not None:
            self._add_held(held, held_nanos, held_us, latest)
        return latest

    def _add_held(self, held: tuple[str, str, int, str, str], nanos: int, at_us: int, latest: dict[int, int]) -> None:
        """Minute runs of one hour, day and month: their buckets once, and the hour's latest instant."""
        self._add_periods(held[0], held[1], held[3], held[4], nanos)
        _note_latest(latest, held[2], at_us)

    def add_keys(self, keys: FoldKeys, nanos: int) -> None:
        """Fold one request in, given its keys (see :func:`keys_of_us`)."""
        when_day, when_month, when_minute, when_hour, key, hkey, m_edge, h_edge = keys
        if not (self._ten and when_hour >= _TEN_DIGITS + _HOURLY_KEEP_S and when_minute < _ELEVEN_DIGITS):
            self._add_calendar(when_day, when_month, nanos)
            if self._ten:  # pending drops were decided with ten-digit keys: apply them first
                self._drop_minutes()
                self._drop_hours()
            self._add_by_value(when_minute, when_hour, nanos)
            return
        self._add_minute(key, m_edge, nanos)
        self._add_periods(when_day, when_month, hkey, h_edge, nanos)

    def _add_calendar(self, when_day: str, when_month: str, nanos: int) -> None:
        day, month = self.day, self.month
        day[when_day] = day.get(when_day, 0) + nanos
        month[when_month] = month.get(when_month, 0) + nanos
        if len(day) > self._keep_days:
            self.day = dict(sorted(day.items())[-self._keep_days :])
        if len(month) > self._keep_months:
            self.month = dict(sorted(month.items())[-self._keep_months :])

    def _add_minute(self, key: str, m_edge: str, nanos: int) -> None:
        """A minute bucket (ten-digit keys)."""
        if not self._mmax or key > self._mmax:
            self._mmax = key
            self._m_edge = m_edge
        if key > self._m_edge:
            minute = self.minute
            minute[key] = minute.get(key, 0) + nanos
            if not self._mmin or key < self._mmin:
                self._mmin = key

    def _add_periods(self, when_day: str, when_month: str, hkey: str, h_edge: str, nanos: int) -> None:
        """The day, month and hour buckets (ten-digit keys)."""
        self._add_calendar(when_day, when_month, nanos)
        if hkey < self._h_last:
            self._drop_hours()  # an older hour: what the newer ones dropped goes first
        hour = self.hour
        hour[hkey] = hour.get(hkey, 0) + nanos
        if not self._hmin or hkey < self._hmin:
            self._hmin = hkey
        if not self._hmax or hkey > self._hmax:
            self._hmax = hkey
        self._h_last = hkey
        self._h_edge = h_edge

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
        self._h_edge = self._h_last = ""
        self._ten = (not m or len(self._mmin) == len(self._mmax) == 10) and (
            not h or len(self._hmin) == len(self._hmax) == 10
        )
        edge = int(self._mmax) - _HOUR_S if self._mmax and self._ten else 0
        self._m_edge = str(edge) if edge >= _TEN_DIGITS else ""


_TEN_DIGITS, _ELEVEN_DIGITS = 10**9, 10**10
_END: tuple[None] = (None,)  # after the last entry: ends the last run


def _note_latest(latest: dict[int, int], hour: int, at_us: int) -> None:
    if latest.get(hour, -1) < at_us:
        latest[hour] = at_us


def spent(state: dict[str, Any] | None, period: str, at: datetime, tz: ZoneInfo) -> int:
    """Spend of the key in the budget period containing ``at`` (nano-USD)."""
    if not state:
        return 0
    if period in ("day", "month"):
        when = When.of(at, tz)  # its calendar keys are cached per minute
        return int(state[period].get(when.day if period == "day" else when.month, 0))
    length, width = ROLLING["rolling_1h"] if period == "rolling_1h" else (timedelta(hours=24), timedelta(hours=1))
    source: dict[str, int] = state["minute"] if period == "rolling_1h" else state["hour"]
    horizon = bucket_start(at - length, width)  # as RollingSum.total, without copying the buckets
    return sum(v for k, v in source.items() if int(k) > horizon)


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
