"""Priced v3 messages (Arrow columns): round trip, size limit, and what a hostile writer cannot get past."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from stream_jobs.store_sink import Message, StoreSink
from tests.fakes import FakeConsumer, FlakyStore, ListDeadLetter
from tokenledger.schema.priced import priced_rows
from tokenledger.schema.priced_arrow import (
    PRICED_ARROW_PREFIX,
    SCHEMA,
    InvalidPricedBatch,
    arrow_rows,
    decode_arrow_batch,
    encode_arrow_batches,
)
from tokenledger.store.records import USAGE_COLUMNS

AT_US = 1_793_491_200_123_456  # 2026-11-01T00:00:00.123456Z


def row(i: int, **changes: Any) -> tuple[Any, ...]:
    base: dict[str, Any] = {
        **dict.fromkeys(USAGE_COLUMNS, ""),
        "source": "//svc",
        "event_id": f"e{i}",
        "request_id": f"r{i}",
        "event_time": AT_US + i,
        "tenant": "acme",
        "user_id": "用户-ü'\"\\",
        "provider": "openai",
        "model": "gpt-4o",
        "usage_source": "provider",
        "batch": i % 2 == 1,
        **dict.fromkeys(("input_tokens", "output_tokens", "cached_read_tokens", "cache_write_tokens"), 10 + i),
        "reasoning_tokens": 0,
        **dict.fromkeys(("input_nanos", "cached_read_nanos", "cache_write_nanos", "output_nanos"), 1000 * i),
        "reasoning_nanos": 0,
        "cost_nanos": 4000 * i,
        "price_version": "genai-prices:v0.2.3:openai/gpt-4o@-#65429157719a",
        "flags": ["unknown_model"] if i == 2 else [],
    }
    base.update(changes)
    return tuple(base[name] for name in USAGE_COLUMNS)


def test_rows_come_back_exactly() -> None:
    rows = [row(i) for i in range(5)]
    [message] = encode_arrow_batches(rows, 900_000)
    got = arrow_rows(decode_arrow_batch(message))
    assert [r["event_id"] for r in got] == ["e0", "e1", "e2", "e3", "e4"]
    assert got[3]["event_time"] == datetime(2026, 11, 1, 0, 0, 0, 123459, tzinfo=UTC)
    assert got[2]["flags"] == ["unknown_model"] and got[1]["batch"] is True and got[4]["cost_nanos"] == 16_000
    assert got[0]["user_id"] == "用户-ü'\"\\"
    assert [p.identity for p in priced_rows(message)] == [("acme", "//svc", f"e{i}") for i in range(5)]


def test_messages_stay_under_the_limit_and_keep_every_row_in_order() -> None:
    rows = [row(i, trace_id="t" * 2_000) for i in range(300)]  # ~2 KB a row
    messages = encode_arrow_batches(rows, 100_000)
    assert len(messages) > 5 and all(len(m) <= 100_000 for m in messages)
    assert [r["event_id"] for m in messages for r in arrow_rows(decode_arrow_batch(m))] == [f"e{i}" for i in range(300)]


def _stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    value: bytes = PRICED_ARROW_PREFIX + sink.getvalue().to_pybytes()
    return value


def _table(rows: list[tuple[Any, ...]]) -> pa.Table:
    return decode_arrow_batch(encode_arrow_batches(rows, 900_000)[0])


def _with(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), pa.field(name, column.type), column)


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda t: PRICED_ARROW_PREFIX + b"\x00garbage", "not an Arrow stream"),
        (lambda t: _stream(t)[:-40], "not an Arrow stream"),
        (lambda t: _stream(t.drop_columns(["flags"])), "schema differs"),
        (lambda t: _stream(_with(t, "cost_nanos", pa.array([1.5, 2.5], pa.float64()))), "schema differs"),
        (lambda t: _stream(_with(t, "tenant", pa.array(["acme", None], pa.string()))), "null values in tenant"),
        (lambda t: _stream(_with(t, "flags", pa.array([[None], []], pa.list_(pa.string())))), "null values in flags"),
        (
            lambda t: _stream(_with(t, "output_tokens", pa.array([1, 2_000_000_000], pa.uint64()))),
            "output_tokens above 1,000,000,000",
        ),
        (
            lambda t: _stream(_with(t, "source", pa.array([b"//ok", b"\xff\xfe"], pa.binary()).view(pa.string()))),
            "not an Arrow stream",
        ),
    ],
    ids=["garbage", "truncated", "missing column", "float money", "null tenant", "null flag", "tokens", "bad utf-8"],
)
def test_a_forged_batch_is_refused_with_its_reason(forge: Any, reason: str) -> None:
    value = forge(_table([row(0), row(1)]))
    with pytest.raises(InvalidPricedBatch, match=reason):
        decode_arrow_batch(value)


def test_the_sink_dead_letters_a_forged_batch_and_stores_the_rest() -> None:
    good = encode_arrow_batches([row(i) for i in range(3)], 900_000)
    forged = _stream(_with(_table([row(7), row(8)]), "tenant", pa.array(["acme", None], pa.string())))
    messages = [Message("usage-priced", 0, i, v) for i, v in enumerate([good[0], forged])]
    store, dlq = FlakyStore(failures=1), ListDeadLetter()
    sink = StoreSink(store, FakeConsumer(messages), dlq, batch_size=100, sleep=lambda s: None)
    assert sink.run_once() == 2
    assert sink.stats.rows == 3 and sink.stats.dead_lettered == 1 and store.attempts == 2  # one refusal, retried
    assert [r[USAGE_COLUMNS.index("event_id")] for r in store.rows] == ["e0", "e1", "e2"]
    [(value, reason)] = dlq.sent
    assert value == forged
    assert reason == "not a priced batch: null values in tenant"
    assert SCHEMA.names == list(USAGE_COLUMNS)
