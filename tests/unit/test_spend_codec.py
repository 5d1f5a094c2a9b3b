"""Spend records packed in memory are exactly the dicts they came from; the changelog keeps JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_jobs.batches import RAW_APPLIED
from stream_jobs.durable_table import PackedJsonCodec
from stream_jobs.spend_codec import PACKING, PackedView, pack, unpack
from stream_jobs.spend_state import SpendFold

TZ = ZoneInfo("Asia/Shanghai")
START_US = (datetime(2026, 10, 31, 15, 0, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3 * 86_400), st.integers(0, 10**15)), min_size=1, max_size=80),
    st.dictionaries(st.integers(0, 600).map(str), st.integers(0, 2**62), max_size=4),
)
def test_packed_records_round_trip(events: list[tuple[int, int]], applied: dict[str, int]) -> None:
    fold = SpendFold(None)
    fold.add_entries([(0, i, START_US + s * 1_000_000, n) for i, (s, n) in enumerate(events)], TZ)
    record: dict[str, Any] = fold.state()
    if applied:
        record[RAW_APPLIED] = applied
    packed = pack(record)
    assert packed[0] in (1, 2)  # a packed layout, not the JSON fallback
    assert unpack(packed) == record
    codec = PackedJsonCodec(PACKING)
    wire = codec.dumps(PACKING.unpack(packed))
    assert msgspec.json.decode(wire) == record  # the changelog carries the JSON dict
    assert codec.loads(wire) == packed


def test_unfit_records_stay_exact_as_json() -> None:
    odd: list[dict[str, Any]] = [
        {"day": {"2026-11-01": 5}, "month": {}, "minute": {}, "hour": {}},  # another key form
        {"day": {}, "month": {}, "minute": {"0060": 1}, "hour": {}},  # a key that is not canonical
        {"day": {}, "month": {}, "minute": {}, "hour": {"1762156800": 2**64}},  # beyond int64
        {"day": {}, "month": {}, "minute": {}, "hour": {}, "applied": {"0": 3}},  # another field
        {"day": {}, "month": {}},  # missing buckets
    ]
    for record in odd:
        packed = pack(record)
        assert packed[0] == 0
        assert unpack(packed) == record


def test_a_one_request_record_is_small() -> None:
    fold = SpendFold(None)
    fold.add_entries([(3, 5 * 65_536, START_US, 1_234_567)], TZ)
    record = {**fold.state(), RAW_APPLIED: {"3": 5 * 65_536}}
    assert len(pack(record)) == 6 + 4 * 8 + 10  # header, four buckets of uint32 amounts, one applied position
    big = {**record, "day": {k: 2**32 for k in record["day"]}}
    assert pack(big)[0] == 1 and len(pack(big)) == 6 + 4 * 12 + 10  # amounts widen to int64
    assert unpack(pack(big)) == big
    assert len(msgspec.json.encode(record)) == 164


def test_packed_view_reads_and_writes_dicts() -> None:
    table: dict[str, Any] = {}
    view = PackedView(table)
    record = {"day": {"2026-10-31T16:00Z": 7}, "month": {"2026-10-31T16:00Z": 7}, "minute": {}, "hour": {}}
    view["k"] = record
    assert isinstance(table["k"], bytes)
    assert view["k"] == record and view.get("k") == record and view.get("missing") is None
    assert list(view) == ["k"] and len(view) == 1
    del view["k"]
    assert not table
