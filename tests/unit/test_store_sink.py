from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from stream_jobs.store_sink import Backoff, Message, SinkStopped, StoreSink
from tests.factories import event_dict
from tests.fakes import FakeConsumer, FlakyStore, ListDeadLetter
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import (
    PRICED_BATCH_PREFIX,
    PRICED_ROWS_PREFIX,
    PricedRowV2,
    encode_priced,
    encode_priced_batches,
    encode_row,
    priced_items,
)
from tokenledger.store.records import USAGE_COLUMNS, usage_row

TABLE = LayeredPriceTable.from_path()


def priced(n: int) -> bytes:
    doc = event_dict(request_id=f"r{n}")
    doc["id"] = f"e{n}"
    ev = decode_usage_event(json.dumps(doc).encode())
    return encode_priced(ev, price(ev.data, ev.time, TABLE))


def row(n: int) -> bytes:
    """The v2 line of the same request as :func:`priced`."""
    doc = event_dict(request_id=f"r{n}")
    doc["id"] = f"e{n}"
    ev = decode_usage_event(json.dumps(doc).encode())
    return encode_row(ev, price(ev.data, ev.time, TABLE))


def messages() -> list[Message]:
    vals = [priced(0), priced(1), priced(1), b"garbage", priced(2)]
    return [Message("usage-priced", i % 2, 10 + i, v) for i, v in enumerate(vals)]


def test_rows_written_then_offsets_committed() -> None:
    consumer, store, dlq = FakeConsumer(messages()), FlakyStore(), ListDeadLetter()
    sink = StoreSink(store, consumer, dlq, batch_size=100, sleep=lambda s: None)
    assert sink.run_once() == 5
    ids = [r[USAGE_COLUMNS.index("event_id")] for r in store.rows]
    assert ids == ["e0", "e1", "e2"]  # duplicate e1 collapsed, garbage dead-lettered
    # gpt-4o: 1000 uncached x $2.50/M + 200 cached x $1.25/M + 300 out x $10/M = $0.00575
    assert {r[USAGE_COLUMNS.index("cost_nanos")] for r in store.rows} == {5_750_000}
    assert dlq.sent[0][1].startswith("not a priced event:")
    assert consumer.committed == {("usage-priced", 0): 15, ("usage-priced", 1): 14}
    assert sink.stats.rows == 3 and sink.stats.dead_lettered == 1


def test_store_outage_pauses_retries_and_commits_only_after_ack() -> None:
    consumer, store, dlq = FakeConsumer(messages()), FlakyStore(failures=4), ListDeadLetter()
    sleeps: list[float] = []
    sink = StoreSink(store, consumer, dlq, sleep=sleeps.append, backoff=Backoff(base_s=1, cap_s=4))
    sink.run_once()
    assert store.attempts == 5
    assert len(sleeps) == 4 and all(0 <= s <= 4 for s in sleeps)
    assert consumer.events == ["pause", "resume", "commit"]
    assert consumer.keepalives == 4
    assert len(store.rows) == 3


def test_usage_row_matches_columns() -> None:
    doc = event_dict()
    ev = decode_usage_event(json.dumps(doc).encode())
    assert ev.time == datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
    row = usage_row(ev, price(ev.data, ev.time, TABLE))
    assert len(row) == len(USAGE_COLUMNS)
    assert dict(zip(USAGE_COLUMNS, row, strict=True))["department"] == "research"


def test_stop_while_the_store_is_down_leaves_the_batch_uncommitted() -> None:
    consumer, store, dlq = FakeConsumer(messages()), FlakyStore(failures=100), ListDeadLetter()
    sleeps: list[float] = []
    sink = StoreSink(store, consumer, dlq, sleep=sleeps.append, should_stop=lambda: len(sleeps) >= 2)
    with pytest.raises(SinkStopped):
        sink.run_once()
    assert store.attempts == 3 and store.rows == []
    assert consumer.events == ["pause"] and consumer.committed == {}  # replayed by the next sink


def test_batch_messages_count_events_dead_letter_a_bad_line_and_log_an_outage_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch message's lines are rows; a broken line alone goes to the dead letters."""
    items = [priced(i) for i in range(5)]
    batches = encode_priced_batches(
        [*items[:3], b"garbage", *items[3:]], limit=2 * len(items[0]) + 20, head=PRICED_BATCH_PREFIX
    )
    assert len(batches) == 3 and all(b.startswith(PRICED_BATCH_PREFIX) for b in batches)
    assert [x for b in batches for x in priced_items(b)] == [*items[:3], b"garbage", *items[3:]]
    msgs = [Message("usage-priced", 0, 7 + i, v) for i, v in enumerate([*batches, priced(5)])]
    consumer, store, dlq = FakeConsumer(msgs), FlakyStore(failures=3), ListDeadLetter()
    sink = StoreSink(store, consumer, dlq, batch_size=100, sleep=lambda s: None)
    with caplog.at_level("WARNING", logger="stream_jobs.store_sink"):
        assert sink.run_once() == 4
    assert [r[USAGE_COLUMNS.index("event_id")] for r in store.rows] == ["e0", "e1", "e2", "e3", "e4", "e5"]
    assert len(dlq.sent) == 1 and dlq.sent[0][0] == b"garbage"
    assert dlq.sent[0][1].startswith("not a priced event (line 2 of a batch of 3):")
    assert consumer.committed == {("usage-priced", 0): 11}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said  # three failed inserts: one line when the store went, one when it came back
    assert said[0].startswith("store unavailable (") and said[1].startswith("store back after ")
    assert said[1].endswith("(3 failed attempts)")


def test_v2_row_lines_are_stored_as_sent_and_a_bad_line_alone_is_dead_lettered() -> None:
    """v2 batches carry the stored rows: the sink checks each line and passes it on unchanged."""
    assert PricedRowV2.__struct_fields__ == USAGE_COLUMNS
    lines = [row(i) for i in range(4)]
    bad = lines[1].replace(b'"gpt-4o"', b"12")  # a number where the model's name belongs
    batches = encode_priced_batches([lines[0], bad, *lines[2:], lines[2]], limit=4 * len(lines[0]))
    assert len(batches) == 2 and all(b.startswith(PRICED_ROWS_PREFIX) for b in batches)
    msgs = [Message("usage-priced", 1, 3 + i, v) for i, v in enumerate([*batches, priced(9)])]
    consumer, store, dlq = FakeConsumer(msgs), FlakyStore(), ListDeadLetter()
    sink = StoreSink(store, consumer, dlq, batch_size=100, sleep=lambda s: None)
    assert sink.run_once() == 3
    assert [r[USAGE_COLUMNS.index("event_id")] for r in store.rows] == ["e0", "e2", "e3", "e9"]  # e2 once
    assert [r[USAGE_COLUMNS.index("cost_nanos")] for r in store.rows] == [5_750_000] * 4
    assert len(dlq.sent) == 1 and dlq.sent[0][0] == bad
    assert dlq.sent[0][1].startswith("not a priced event (line 2 of a batch of 3):")
    assert consumer.committed == {("usage-priced", 1): 6}
