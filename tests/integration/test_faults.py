"""Fault tests, loopback only: store totals equal the ground truth of what was sent, to the nano.

* hostile and malformed input next to valid traffic (huge labels, invalid UTF-8, negative
  tokens, unknown fields, deep nesting, cached > input, empty values), duplicates,
  redeliveries, out-of-order delivery, unknown models and late events of a closed period,
  through the real pricing agent (Faust, tansu) and the store sink (chdb);
* the store unavailable for a whole minute under a running sink;
* a broker restart during load (tansu on S3 storage served by moto on loopback, so topics,
  offsets and changelogs survive the restart as on a real cluster).
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from infra.broker import EmbeddedBroker, free_port, start_broker
from infra.topics import create_topics
from infra.workers import worker_env
from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.store_sink import Message, StoreSink
from tests.factories import event_dict
from tests.integration.test_store_sink_kafka import OutageStore, publish
from tests.integration.test_stream_pipeline import Worker, read_all, read_messages
from tokenledger import metrics
from tokenledger.kafka_config import KafkaSettings, Topics
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema import UsageEventV1
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
        producer.produce(kafka.topics.usage_raw, value, key=key)
        if i % 40 == 0:  # hostile input interleaved with valid traffic
            raw, _ = bad[(i // 40) % len(bad)]
            producer.produce(kafka.topics.usage_raw, raw, key=b"hostile")
    sent_bad = len(range(0, len(wire), 40))
    for doc in late:  # late events, after the period closed
        producer.produce(
            kafka.topics.usage_raw, json.dumps(doc).encode(), key=f"//svc/chat-api|{doc['data']['request_id']}".encode()
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
        def insert(self, table: str, columns: Any, rows: Any) -> None:
            if time.monotonic() < outage_until:
                raise StoreUnavailable("simulated outage: store down for a minute")
            self.inner.insert(table, columns, rows)

    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, "sink-outage-minute")
    sink = StoreSink(MinuteOutage(store, 0), consumer, KafkaDeadLetter(kafka), batch_size=150, batch_wait_s=0.3)
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


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, dict[str, str]]]:
    """tansu on S3 storage (a moto server on loopback), so a broker restart keeps the topics."""
    s3_port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(s3_port)],
        stdout=(tmp_path / "moto.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{s3_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(endpoint, timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    request = urllib.request.Request(f"{endpoint}/tansu", method="PUT")  # create the bucket
    urllib.request.urlopen(request, timeout=5).close()
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    broker = start_broker(log_path=tmp_path / "tansu.log", storage_engine="s3://tansu/", env=env)
    yield broker, env
    broker.stop()
    moto.terminate()
    moto.wait(10)


# tansu 0.6's S3 engine lists every batch object of a partition on each fetch (about 0.55 ms per
# object on moto) and answers empty, without an error, once that outlasts the fetch wait. The
# consumers here wait long enough for a few thousand objects; see test_short_fetch_wait_stall_is_reported.
S3_FETCH_WAIT_MS = 5000


def test_broker_restart_during_load(
    durable_broker: tuple[EmbeddedBroker, dict[str, str]], store: ChdbStore, tmp_path: Path
) -> None:
    broker, s3_env = durable_broker
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{v}-{suffix}" for k, v in Topics().__dict__.items()})
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, topics=topics, fetch_wait_ms=S3_FETCH_WAIT_MS)
    create_topics(settings, partitions=3)
    worker = Worker(
        worker_env(settings, app_id=f"tl-restart-{suffix}", datadir=tmp_path / "faust", role="pricing"),
        tmp_path / "worker.log",
    )
    worker.start()
    docs = [valid(i, f"2026-10-{1 + i % 28:02d}T08:00:00Z") for i in range(600)]
    truth = sum(
        price(ev.data, ev.time, TABLE).total_nanos
        for ev in (UsageEventV1.model_validate_json(json.dumps(d)) for d in docs)
    )
    stop = threading.Event()
    errors: list[str] = []
    polled: list[tuple[int, int]] = []

    def sink_loop() -> None:
        consumer = ConfluentBatchConsumer(settings, topics.usage_priced, f"sink-{suffix}")
        sink = StoreSink(store, consumer, KafkaDeadLetter(settings), batch_size=200, batch_wait_s=0.2)
        poll = consumer.poll_batch

        def traced(max_messages: int, timeout_s: float) -> list[Message]:
            batch = poll(max_messages, timeout_s)
            polled.extend((m.partition, m.offset) for m in batch)
            return batch

        consumer.poll_batch = traced  # type: ignore[method-assign]
        while not stop.is_set():
            try:
                sink.run_once()
            except Exception as exc:
                errors.append(repr(exc))
                time.sleep(0.5)
        consumer.close()

    def publish() -> None:
        producer = Producer({**settings.client_config(), "linger.ms": 0, "message.timeout.ms": 120_000})
        for doc in docs:
            key = f"//svc/chat-api|{doc['data']['request_id']}".encode()
            producer.produce(topics.usage_raw, json.dumps(doc).encode(), key=key)
            producer.poll(0)
            time.sleep(0.02)
        assert producer.flush(120) == 0

    sink_thread = threading.Thread(target=sink_loop)
    publisher = threading.Thread(target=publish)
    sink_thread.start()
    publisher.start()
    deadline = time.monotonic() + 120
    while int(store.query("SELECT count() FROM usage_events FINAL").scalar()) < 100:  # mid-load
        assert time.monotonic() < deadline, f"pipeline not flowing; worker log: {worker.log}"
        time.sleep(0.2)
    port = broker.port
    broker.stop()
    time.sleep(3)
    restarted = start_broker(port=port, log_path=tmp_path / "tansu-2.log", storage_engine="s3://tansu/", env=s3_env)
    broker.process = restarted.process  # the fixture stops the running one
    publisher.join(180)
    deadline = time.monotonic() + 240
    rows = 0
    while rows < 600 and time.monotonic() < deadline:
        time.sleep(1)
        rows = int(store.query("SELECT count() FROM usage_events FINAL").scalar())
    stop.set()
    sink_thread.join(30)
    worker.stop()
    count, total = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
    priced = {orjson.loads(v or b"{}")["event"]["id"] for _, v in read_all(settings, topics.usage_priced)}
    assert (count, total) == (600, truth), (
        f"{len(priced)} priced events on the topic; sink errors {errors}; "
        f"sink skipped (partition, offset): {_skipped(settings, topics.usage_priced, polled)}; {worker.log}"
    )


def _skipped(settings: KafkaSettings, topic: str, polled: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Offsets a fresh reader finds on ``topic`` that the running consumer never polled."""
    present = {(m.partition() or 0, m.offset() or 0) for m in read_messages(settings, topic)}
    return sorted(present - set(polled))[:40]


def test_short_fetch_wait_stall_is_reported(
    durable_broker: tuple[EmbeddedBroker, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """The restart test's root cause, isolated: on tansu's S3 engine a fetch whose wait is shorter
    than the partition listing comes back empty and error-free, so a consumer makes no progress
    at all. The sink's consumer must say so (warning + stalled-seconds gauge) instead of idling."""
    broker, _ = durable_broker
    topic = f"stall-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, fetch_wait_ms=S3_FETCH_WAIT_MS)
    create_topics(replace(settings, topics=Topics(usage_priced=topic)), partitions=1)
    producer = Producer({**settings.client_config(), "linger.ms": 0})
    for i in range(600):  # 600 single-record batches: 600 objects to list per fetch (~330 ms)
        producer.produce(topic, f"{i}".encode())
        producer.flush(30)

    patient = ConfluentBatchConsumer(settings, topic, f"patient-{topic}")
    got = 0
    deadline = time.monotonic() + 120
    while got < 600 and time.monotonic() < deadline:
        got += len(patient.poll_batch(600, 1.0))
    patient.close()
    assert got == 600

    clock = [0.0]
    hasty = ConfluentBatchConsumer(
        replace(settings, fetch_wait_ms=100),
        topic,
        f"hasty-{topic}",
        stall_after_s=30,
        check_every_s=10,
        clock=lambda: clock[0],
    )
    received = 0
    with caplog.at_level(logging.WARNING, logger="stream_jobs.kafka_io"):
        for _ in range(12):  # 12 polls of 1 s; the injected clock says 10 s pass per poll
            received += len(hasty.poll_batch(600, 1.0))
            clock[0] += 10
    hasty.close()
    assert received == 0, "the listing got faster than 100 ms: this test no longer shows the stall"
    assert metrics.CONSUMER_STALLED.labels(f"hasty-{topic}", topic)._value.get() >= 30
    assert [r.getMessage() for r in caplog.records if "received nothing" in r.getMessage()], caplog.text
