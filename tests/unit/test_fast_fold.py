"""The fast fold (string-compared buckets, per-minute calendar keys) equals the straightforward one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_jobs import spend_state
from stream_jobs.spend_state import (
    _HOUR_S,
    _HOURLY_KEEP_S,
    SpendFold,
    When,
    add_spend,
    add_spend_many,
    fold_keys,
    keys_of_us,
)
from tokenledger import windows
from tokenledger.windows import ROLLING, bucket_start, calendar_window

TZS = [ZoneInfo("Asia/Shanghai"), ZoneInfo("America/St_Johns"), ZoneInfo("UTC")]


def reference_when(at: datetime, tz: ZoneInfo) -> When:
    return When(
        at,
        calendar_window(at, "day", tz).key,
        calendar_window(at, "month", tz).key,
        bucket_start(at, ROLLING["rolling_1h"][1]),
        bucket_start(at, timedelta(hours=1)),
    )


def reference_add(state: dict[str, Any] | None, when: When, nanos: int) -> dict[str, Any]:
    """The fold as first written: every key parsed, every dict rebuilt."""
    if state is None:
        state = {"day": {}, "month": {}, "minute": {}, "hour": {}}
    day = dict(state["day"])
    day[when.day] = day.get(when.day, 0) + nanos
    month = dict(state["month"])
    month[when.month] = month.get(when.month, 0) + nanos
    if len(day) > 2:
        day = dict(sorted(day.items())[-2:])
    if len(month) > 2:
        month = dict(sorted(month.items())[-2:])
    minute = dict(state["minute"])
    newest = max([when.minute, *(int(k) for k in minute)])
    key = str(when.minute)
    if when.minute > newest - _HOUR_S:
        minute[key] = minute.get(key, 0) + nanos
    minute = {k: v for k, v in minute.items() if int(k) > newest - _HOUR_S}
    hour = dict(state["hour"])
    hkey = str(when.hour)
    hour[hkey] = hour.get(hkey, 0) + nanos
    hour = {k: v for k, v in hour.items() if int(k) > when.hour - _HOURLY_KEEP_S}
    return {"day": day, "month": month, "minute": minute, "hour": hour}


BASES = [
    datetime(2026, 10, 31, 15, 30, tzinfo=UTC),  # a month edge in Asia/Shanghai
    datetime(2001, 9, 8, 23, 0, tzinfo=UTC),  # epoch seconds go from nine to ten digits at 2001-09-09 01:46:40
    datetime(1999, 12, 31, 20, 0, tzinfo=UTC),
]
steps = st.lists(st.tuples(st.integers(-3 * 86_400, 3 * 86_400), st.integers(0, 10**12)), min_size=1, max_size=60)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(BASES), st.sampled_from(TZS), steps)
def test_fast_fold_equals_reference(base: datetime, tz: ZoneInfo, events: list[tuple[int, int]]) -> None:
    fast: dict[str, Any] | None = None
    slow: dict[str, Any] | None = None
    for offset_s, nanos in events:
        at = base + timedelta(seconds=offset_s, microseconds=offset_s % 997)
        when = When.of(at, tz)
        assert when == reference_when(at, tz)
        fast = add_spend(fast, when, nanos)
        slow = reference_add(slow, when, nanos)
        assert fast == slow


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BASES), st.sampled_from(TZS), steps, st.integers(1, 60))
def test_batched_fold_equals_one_by_one(
    base: datetime, tz: ZoneInfo, events: list[tuple[int, int]], batch: int
) -> None:
    """The spend stage folds a delta's entries at once; the state is the one of folding them one by one."""
    whens = [(When.of(base + timedelta(seconds=s), tz), n) for s, n in events]
    one_by_one: dict[str, Any] | None = None
    batched: dict[str, Any] | None = None
    for when, nanos in whens:
        one_by_one = reference_add(one_by_one, when, nanos)
    for i in range(0, len(whens), batch):
        batched = add_spend_many(batched, whens[i : i + batch])
    assert batched == one_by_one


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BASES), st.sampled_from(TZS), st.integers(-3 * 86_400 * 10**6, 3 * 86_400 * 10**6))
def test_keys_from_epoch_microseconds_equal_the_datetime_path(base: datetime, tz: ZoneInfo, delta_us: int) -> None:
    """The spend stage's keys from a delta entry's epoch µs are the keys of the event's datetime."""
    at = base + timedelta(microseconds=delta_us)
    at_us = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    w = reference_when(at, tz)
    assert keys_of_us(at_us, tz) == fold_keys(w.day, w.month, w.minute, w.hour)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(BASES),
    st.sampled_from(TZS),
    st.lists(  # seconds from the base, mostly in runs of one minute as at a high rate
        st.tuples(st.integers(-3 * 86_400, 3 * 86_400), st.integers(1, 30), st.integers(0, 10**12)),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 60),
)
def test_entries_folded_by_minute_runs_equal_one_by_one(
    base: datetime, tz: ZoneInfo, runs: list[tuple[int, int, int]], batch: int
) -> None:
    """``add_entries`` folds each run of a minute once: the state and latest instants are the one-by-one ones."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    entries: list[tuple[int, int, int, int]] = []
    for start_s, count, nanos in runs:
        for i in range(count):
            at = base + timedelta(seconds=start_s + i * 7 % 60, microseconds=i)
            entries.append((0, len(entries), (at - epoch) // timedelta(microseconds=1), nanos + i))
    one_by_one: dict[str, Any] | None = None
    latest: dict[int, int] = {}
    for _, _, at_us, nanos in entries:
        when = When.of(epoch + timedelta(microseconds=at_us), tz)
        one_by_one = reference_add(one_by_one, when, nanos)
        latest[when.hour] = max(latest.get(when.hour, at_us), at_us)
    batched: dict[str, Any] | None = None
    got: dict[int, int] = {}
    for i in range(0, len(entries), batch):
        fold = SpendFold(batched)
        for hour, at_us in fold.add_entries(entries[i : i + batch], tz).items():
            got[hour] = max(got.get(hour, at_us), at_us)
        batched = fold.state()
    assert batched == one_by_one
    assert got == latest


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([*BASES, datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2026, 11, 1, 5, 0, tzinfo=UTC)]),
    st.sampled_from([*TZS, ZoneInfo("Asia/Kathmandu"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")]),
    st.lists(st.integers(-40 * 86_400 * 10**6, 40 * 86_400 * 10**6), min_size=1, max_size=40),
)
def test_keys_of_sparse_minutes_equal_the_datetime_path(base: datetime, tz: ZoneInfo, deltas: list[int]) -> None:
    """Instants days apart, back and forth, over DST changes and 45-minute offsets: the day and
    month remembered from the previous lookup are reused only where they hold."""
    spend_state._FOLD_KEYS.clear()
    windows._LAST.clear()
    for delta_us in deltas:
        at = base + timedelta(microseconds=delta_us)
        at_us = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        w = reference_when(at, tz)
        assert keys_of_us(at_us, tz) == fold_keys(w.day, w.month, w.minute, w.hour)
