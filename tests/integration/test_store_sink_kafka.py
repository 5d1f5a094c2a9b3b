"""Sink against the real broker and chdb: exact totals through outages and crashes."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import Producer

from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.store_sink import Message, StoreSink
from tests.factories import event_dict
from tests.fakes import FakeConsumer, ListDeadLetter
from tests.integration.test_stream_pipeline import read_messages
from tokenledger.event_time import epoch_us
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import BATCH_BYTES, encode_priced, encode_priced_batches, encode_row
from tokenledger.schema.priced_arrow import PRICED_ARROW_PREFIX, encode_arrow_batches
from tokenledger.store.base import StoreUnavailable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.records import usage_row

TABLE = LayeredPriceTable.from_path()


class OutageStore:
    """Wraps the real store; refuses inserts while ``down`` is positive."""

    def __init__(self, inner: ChdbStore, down: int) -> None:
        self.inner, self.down = inner, down

    def guard(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise StoreUnavailable("simulated outage")

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.guard()
        self.inner.insert(table, columns, rows)

    def insert_lines(self, table: str, columns: Sequence[str], lines: Sequence[bytes]) -> None:
        self.guard()
        self.inner.insert_lines(table, columns, lines)

    def insert_arrow(self, table: str, data: Any) -> None:
        self.guard()
        self.inner.insert_arrow(table, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def publish(settings: KafkaSettings, n: int) -> int:
    """Publish n priced events, a redelivery of the first 50 and 2 garbage messages.

    Returns the ground-truth total in nano-USD of the n distinct events.
    """
    producer = Producer(settings.client_config())
    total = 0
    values = []
    for i in range(n):
        doc = event_dict(request_id=f"r{i}", input_tokens=1000 + i, output_tokens=100 + i % 7)
        doc["id"] = f"e{i}"
        ev = decode_usage_event(json.dumps(doc).encode())
        cost = price(ev.data, ev.time, TABLE)
        total += cost.total_nanos
        values.append((f"e{i}".encode(), encode_priced(ev, cost)))
    for key, value in [*values, *values[:50], (b"x", b"{not json"), (b"y", b'{"type": "other"}')]:
        producer.produce(settings.topics.usage_priced, value, key=key)
    assert producer.flush(30) == 0
    return total


def drain(sink: StoreSink, expected_messages: int, max_rounds: int = 400) -> int:
    seen = 0
    for _ in range(max_rounds):
        seen += sink.run_once()
        if seen >= expected_messages:
            break
    return seen


def totals(store: ChdbStore) -> tuple[int, int]:
    count, nanos = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
    return int(count), int(nanos)


def test_sink_exact_totals_through_outage_and_crash(kafka: KafkaSettings, store: ChdbStore) -> None:
    n = 1500
    truth = publish(kafka, n)
    expected_messages = n + 50 + 2

    # First worker: the store is down for its first 3 attempts; it crashes (no commit) after
    # its second batch was inserted.
    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, "sink")
    dlq = KafkaDeadLetter(kafka)
    sink = StoreSink(OutageStore(store, down=3), consumer, dlq, batch_size=400, sleep=lambda s: None)
    sink.run_once()
    assert sink.stats.retries == 3
    real_commit = consumer.commit
    consumer.commit = lambda offsets: (_ for _ in ()).throw(RuntimeError("killed"))  # type: ignore[method-assign]
    with contextlib.suppress(RuntimeError):
        sink.run_once()
    consumer.commit = real_commit  # type: ignore[method-assign]
    consumer.close()

    # Second worker resumes from the committed offsets; the uncommitted batch is redelivered.
    consumer2 = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, "sink")
    sink2 = StoreSink(store, consumer2, dlq, batch_size=400, sleep=lambda s: None)
    consumed = drain(sink2, expected_messages - 400)
    assert consumed >= expected_messages - 400
    consumer2.close()

    assert totals(store) == (n, truth)

    # Both garbage messages are in the dead-letter topic with a reason.
    # A garbage message in the crashed (uncommitted) batch is dead-lettered again on replay:
    # at least once, under the same origin key, so readers collapse it.
    by_origin = {m.key(): orjson.loads(m.value() or b"") for m in read_messages(kafka, kafka.topics.dead_letter)}
    assert sorted(d["value"] for d in by_origin.values()) == ['{"type": "other"}', "{not json"]
    assert all(k == "{topic}/{partition}/{offset}".format(**d["origin"]).encode() for k, d in by_origin.items())
    assert all(d["reason"].startswith("not a priced event:") for d in by_origin.values())


def test_v1_events_v2_rows_and_v3_columns_store_identically(store: ChdbStore) -> None:
    """Earlier releases' v1 messages and v2 row lines, and today's v3 columns, give the same stored rows, to the µs."""

    def event(i: int, source: str) -> Any:
        doc = event_dict(request_id=f"r{i}", model="mystery-model" if i == 2 else "gpt-4o")
        doc["id"], doc["source"] = f"e{i}", source
        doc["time"] = ["2026-10-31T23:30:00.123456Z", "2026-11-01T07:30:00.000001+08:00", "2026-11-02T01:02:03Z"][i]
        doc["data"]["labels"]["user"] = "用户-ü'\"\\"
        return decode_usage_event(json.dumps(doc).encode())

    v1 = [encode_priced(ev, price(ev.data, ev.time, TABLE)) for ev in (event(i, "//v1") for i in range(3))]
    v2 = encode_priced_batches(
        [encode_row(ev, price(ev.data, ev.time, TABLE)) for ev in (event(i, "//v2") for i in range(3))]
    )
    v3 = encode_arrow_batches(
        [
            usage_row(ev, price(ev.data, ev.time, TABLE), epoch_us(ev.time))
            for ev in (event(i, "//v3") for i in range(3))
        ],
        BATCH_BYTES,
    )
    messages = [Message("usage-priced", 0, i, v) for i, v in enumerate([*v1, *v2, *v3])]
    sink = StoreSink(store, FakeConsumer(messages), ListDeadLetter(), batch_size=100, sleep=lambda s: None)
    assert sink.run_once() == 5 and sink.stats.rows == 9
    cols = "event_id, toString(event_time), user_id, model, cost_nanos, flags, price_version"
    got = {
        source: store.query(
            f"SELECT {cols} FROM usage_events FINAL WHERE source = {{s:String}} ORDER BY event_id", {"s": source}
        ).rows
        for source in ("//v1", "//v2", "//v3")
    }
    assert got["//v1"] == got["//v2"] == got["//v3"]
    assert [r[1] for r in got["//v2"]] == [
        "2026-10-31 23:30:00.123456",
        "2026-10-31 23:30:00.000001",
        "2026-11-02 01:02:03.000000",
    ]
    assert got["//v2"][0][2] == "用户-ü'\"\\" and got["//v2"][2][5] == ["unknown_model"]


def test_a_forged_900_kb_batch_is_dead_lettered_through_the_broker_and_the_rest_stored(
    kafka: KafkaSettings, store: ChdbStore
) -> None:
    """A binary message near the size limit: its dead letter (base64, first 64 KiB) fits, so the batch commits."""
    doc = event_dict(request_id="r-ok")
    ev = decode_usage_event(json.dumps(doc).encode())
    cost = price(ev.data, ev.time, TABLE)
    good = encode_arrow_batches([usage_row(ev, cost, epoch_us(ev.time))], BATCH_BYTES)
    forged = PRICED_ARROW_PREFIX + bytes(range(256)) * 3_500  # 896 KB, not an Arrow stream
    producer = Producer(kafka.producer_config())
    for value in (*good, forged):
        producer.produce(kafka.topics.usage_priced, value, partition=0)
    assert producer.flush(30) == 0
    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, "sink-forged")
    sink = StoreSink(store, consumer, KafkaDeadLetter(kafka), batch_size=100, sleep=lambda s: None)
    assert drain(sink, 2) == 2
    consumer.close()
    assert totals(store) == (1, cost.total_nanos) and sink.stats.dead_lettered == 1
    [letter] = [orjson.loads(m.value() or b"") for m in read_messages(kafka, kafka.topics.dead_letter)]
    assert letter["reason"].startswith("not a priced batch: not an Arrow stream")
    assert letter["value_bytes"] == len(forged) and "value" not in letter
    assert base64.b64decode(letter["value_base64"]) == forged[:65_536]
