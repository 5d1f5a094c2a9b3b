"""Fault tests, loopback only: store totals equal the ground truth of what was sent, to the nano.

* hostile and malformed input next to valid traffic (huge labels, invalid UTF-8, negative
  tokens, unknown fields, deep nesting, cached > input, empty values), duplicates,
  redeliveries, out-of-order delivery, unknown models and late events of a closed period,
  through the real pricing agent (Faust, Kafka) and the store sink (chdb);
* the store unavailable for a whole minute under a running sink.

Crashes of every process while events are in flight (workers, broker) are in
``test_crash_exact.py``.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from infra.workers import worker_env
from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.store_sink import Backoff, StoreSink
from tests.factories import event_dict
from tests.integration.test_store_sink_kafka import OutageStore, publish
from tests.integration.test_stream_pipeline import Worker, read_all
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema import UsageEventV1
from tokenledger.schema.raw_batch import event_time_ms
from tokenledger.store.base import StoreUnavailable
from tokenledger.store.chdb_store import ChdbStore

TABLE = LayeredPriceTable.from_path()
MODELS = ["gpt-4o", "gpt-4o-mini", "deepseek-chat", "claude-sonnet-4-20250514", "acme-llm-9000"]


def valid(i: int, when: str) -> dict[str, Any]:
    model = MODELS[i % len(MODELS)]
    provider = {"deepseek-chat": "deepseek", "claude-sonnet-4-20250514": "anthropic"}.get(model, "openai")
    doc = event_dict(
        provider=provider,
        model=model,
        request_id=f"fault-{i}",
        input_tokens=1_000 + 37 * i,
        output_tokens=50 + 11 * (i % 13),
        cached_read_tokens=(i % 4) * 100,
        labels={"tenant": ["acme", "globex", "initech"][i % 3], "user": f"u-{i % 17}", "department": f"d{i % 5}"},
    )
    doc["id"] = f"fault-evt-{i}"
    doc["time"] = when
    return doc


def hostile() -> list[tuple[bytes, str]]:
    """(raw bytes, a word the dead-letter reason must contain)."""
    big = event_dict(request_id="h1", labels={"tenant": "acme", "department": "d" * 10_000})
    negative = event_dict(request_id="h2", input_tokens=-5)
    extra = {**event_dict(request_id="h3"), "surprise": True}
    cached = event_dict(request_id="h4", input_tokens=10, cached_read_tokens=20)
    deep = (
        b'{"specversion": "1.0", "id": "deep", "source": "//svc/x", "type": "dev.tokenledger.usage.v1", '
        b'"time": "2026-10-01T00:00:00Z", "data": ' + b"[" * 5_000 + b"1" + b"]" * 5_000 + b"}"
    )
    return [
        (json.dumps(big).encode(), "department"),
        (json.dumps(negative).encode(), "input_tokens"),
        (json.dumps(extra).encode(), "surprise"),
        (json.dumps(cached).encode(), "cached"),
        (deep, "data"),
        (b'{"specversion": "1.0", "id": "\xff\xfe\xfd"}', "unicode"),
        (b"", "eof while parsing"),
        (b"\x00" * 64, "json"),
    ]


@pytest.fixture
def pricing_worker(kafka: KafkaSettings, tmp_path: Path) -> Iterator[Worker]:
    env = worker_env(kafka, app_id=f"tl-fault-{uuid.uuid4().hex[:8]}", datadir=tmp_path / "faust", role="pricing")
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    yield worker
    worker.stop()


def test_hostile_input_duplicates_out_of_order_and_late_events(
    kafka: KafkaSettings, store: ChdbStore, pricing_worker: Worker
) -> None:
    rng = random.Random(11)
    docs = [valid(i, f"2026-10-{1 + i % 28:02d}T{i % 24:02d}:15:00Z") for i in range(240)]
    late = [valid(1_000 + i, f"2026-08-{10 + i:02d}T09:00:00Z") for i in range(10)]  # a closed period
    truth_nanos = 0
    by_month: dict[str, int] = {}
    unknown = 0
    for doc in docs + late:
        ev = UsageEventV1.model_validate_json(json.dumps(doc))
        cost = price(ev.data, ev.time, TABLE)
        truth_nanos += cost.total_nanos
        by_month[doc["time"][:7]] = by_month.get(doc["time"][:7], 0) + cost.total_nanos
        unknown += "unknown_model" in cost.flags
    assert unknown == 50  # the unknown model is priced by the explicit fallback, and flagged
    wire = [(f"//svc/chat-api|{d['data']['request_id']}".encode(), json.dumps(d).encode()) for d in docs]
    # Duplicates: 30 exact copies; 10 retries of a request under a new event id (same request).
    wire += rng.sample(wire, 30)
    for d in rng.sample(docs, 10):
        retry = {**d, "id": f"{d['id']}-retry"}
        wire.append((f"//svc/chat-api|{d['data']['request_id']}".encode(), json.dumps(retry).encode()))
    rng.shuffle(wire)  # out of order
    bad = hostile()
    producer = Producer({**kafka.client_config(), "message.max.bytes": 2_000_000})
    for i, (key, value) in enumerate(wire):
        producer.produce(kafka.topics.usage_raw, value, key=key, timestamp=event_time_ms(value))
        if i % 40 == 0:  # hostile input interleaved with valid traffic
            raw, _ = bad[(i // 40) % len(bad)]
            producer.produce(kafka.topics.usage_raw, raw, key=b"hostile")
    sent_bad = len(range(0, len(wire), 40))
    for doc in late:  # late events, after the period closed
        value = json.dumps(doc).encode()
        late_ms = event_time_ms(value) + 20 * 86_400_000  # arrives 20 days late: inside the 30-day window
        producer.produce(
            kafka.topics.usage_raw, value, key=f"//svc/chat-api|{doc['data']['request_id']}".encode(), timestamp=late_ms
        )
    assert producer.flush(30) == 0

    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, f"sink-{uuid.uuid4().hex[:6]}")
    sink = StoreSink(store, consumer, KafkaDeadLetter(kafka), batch_size=500, batch_wait_s=0.3)
    deadline = time.monotonic() + 150
    rows = 0
    while rows < 250 and time.monotonic() < deadline:
        if sink.run_once():
            rows = int(store.query("SELECT count() FROM usage_events FINAL").scalar())
    consumer.close()
    count, total = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
    assert (count, total) == (250, truth_nanos), f"worker log: {pricing_worker.log}"
    months = dict(
        store.query(
            "SELECT formatDateTime(event_time, '%Y-%m'), sum(cost_nanos) FROM usage_events FINAL GROUP BY 1"
        ).rows
    )
    assert months == by_month  # late August events are stored in August
    assert int(store.query("SELECT countIf(has(flags, 'unknown_model')) FROM usage_events FINAL").scalar()) == 50

    letters = [orjson.loads(v or b"{}") for _, v in read_all(kafka, kafka.topics.dead_letter)]
    assert len(letters) == sent_bad == 7
    reasons = " ".join(d["reason"].lower() for d in letters)
    for _, word in bad[:sent_bad]:
        assert word.lower() in reasons, (word, reasons[:2000])
    assert all(d["stage"] == "pricing" and d["reason"] for d in letters)


def test_store_down_for_a_minute(kafka: KafkaSettings, store: ChdbStore) -> None:
    truth = publish(kafka, 400)
    outage_until = time.monotonic() + 60.0

    class MinuteOutage(OutageStore):
        def guard(self) -> None:
            if time.monotonic() < outage_until:
                raise StoreUnavailable("simulated outage: store down for a minute")

    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, "sink-outage-minute")
    # Seeded jitter: its delays need 14 retries to cover the minute (an unseeded draw once covered it in 9).
    backoff = Backoff(rng=random.Random(7))
    sink = StoreSink(
        MinuteOutage(store, 0), consumer, KafkaDeadLetter(kafka), batch_size=150, batch_wait_s=0.3, backoff=backoff
    )
    done = threading.Event()

    def run() -> None:
        idle = 0
        while idle < 10:
            idle = 0 if sink.run_once() else idle + 1
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(180)
    consumer.close()
    assert done.is_set()
    assert sink.stats.retries >= 10  # kept retrying with backoff for the whole minute
    count, total = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
    assert (count, total) == (400, truth)
    assert sink.stats.dead_lettered == 2
