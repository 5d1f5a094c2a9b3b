"""``event_time_ms``: msgspec's RFC 3339 parse decides as ``datetime.fromisoformat`` did, whatever the value."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenledger.schema.raw_batch import _event_time_ms_slow, event_time_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

instants = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1))
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@st.composite
def times(draw: st.DrawFn) -> object:
    at = draw(instants)
    kind = draw(st.sampled_from(["iso", "z", "naive", "space", "digits", "junk", "null", "number", "absent"]))
    if kind == "iso":
        spec = draw(st.sampled_from(["seconds", "milliseconds", "microseconds"]))
        return at.replace(tzinfo=draw(offsets)).isoformat(timespec=spec)
    if kind == "z":
        return at.isoformat() + "Z"
    if kind == "naive":
        return at.isoformat()
    if kind == "space":
        return at.replace(tzinfo=UTC).isoformat(sep=" ")
    if kind == "digits":  # more fraction digits than a datetime holds
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + draw(st.text("0123456789", min_size=1, max_size=9)) + "+00:00"
    if kind == "junk":
        return draw(st.text(max_size=30))
    if kind == "null":
        return None
    if kind == "number":
        return draw(st.integers())
    return ...


def _event(time: object) -> dict[str, object]:
    return {"id": "e", "data": {"x": 1}} | ({} if time is ... else {"time": time})


@settings(max_examples=400)
@given(st.lists(times(), min_size=1, max_size=4), st.booleans())
def test_fast_path_equals_the_fromisoformat_path(stamps: list[object], as_batch: bool) -> None:
    docs = [_event(t) for t in stamps]
    value = json.dumps(docs if as_batch else docs[0]).encode()
    assert event_time_ms(value) == _event_time_ms_slow(value)


def test_exact_milliseconds_of_known_values() -> None:
    one = json.dumps({"time": "2026-11-01T08:00:00.123999+08:00"}).encode()
    batch = json.dumps([{"time": "2026-11-01T00:00:00.001Z"}, {"time": "2026-11-01T00:00:00.002Z"}, {"time": "nope"}])
    at = datetime(2026, 11, 1, 0, 0, 0, 123999, tzinfo=UTC)
    assert event_time_ms(one) == (at - _EPOCH) // timedelta(milliseconds=1)
    assert event_time_ms(one) == 1_793_491_200_123
    assert event_time_ms(batch.encode()) == 1_793_491_200_002
    assert event_time_ms(b"not json") == 0
    assert event_time_ms(b'{"time": "2026-11-01T00:00:00"}') == 0  # no offset: no instant


def test_invalid_utf8_is_no_time_not_an_exception() -> None:
    assert event_time_ms(b'{"time": "\xff"}') == 0
    assert event_time_ms(b'[{"time": "2026-11-01T00:00:00Z"}, {"time": "\xfe"}]') == 0
