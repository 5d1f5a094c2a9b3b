"""The sink's commit cannot wedge it: an unanswered commit is a transient outage, retried.

A broker frozen with SIGSTOP right after the store took a batch keeps the commit's TCP
connection open and never answers, the way a broker restart once left librdkafka's synchronous
commit waiting forever while ``/healthz`` said ok.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from infra.broker import KafkaBroker
from infra.topics import SIMULATION_RETENTION_MS, create_topics
from infra.workers import committed_offsets
from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.sink_main import SinkRun
from stream_jobs.store_sink import Backoff, StoreSink
from tests.factories import priced_values
from tokenledger import metrics
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate


class FreezeBrokerAfterFirstInsert:
    """The real store; once it has taken the first batch, the broker freezes (before the commit)."""

    def __init__(self, inner: ChdbStore, broker_pid: int) -> None:
        self.inner, self.pid = inner, broker_pid
        self.frozen_at: float | None = None

    def insert_lines(self, table: str, columns: object, lines: object) -> None:
        self.inner.insert_lines(table, columns, lines)  # type: ignore[arg-type]
        self._freeze()

    def insert_arrow(self, table: str, data: object) -> None:
        self.inner.insert_arrow(table, data)
        self._freeze()

    def _freeze(self) -> None:
        if self.frozen_at is None:
            os.kill(self.pid, signal.SIGSTOP)
            self.frozen_at = time.monotonic()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_unanswered_commit_is_retried_after_a_bounded_wait(
    own_broker: KafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = KafkaSettings(bootstrap_servers=own_broker.bootstrap)
    create_topics(settings, partitions=3, retention_ms=SIMULATION_RETENTION_MS)
    pid = own_broker.pid
    assert pid is not None
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    producer = Producer(settings.client_config())
    for i, value in enumerate(priced_values(30)):
        producer.produce(settings.topics.usage_priced, value, partition=i % 3)
    assert producer.flush(30) == 0
    ends = {0: 10, 1: 10, 2: 10}

    frozen = FreezeBrokerAfterFirstInsert(store, pid)
    waits: list[float] = []  # seconds from the freeze to each failed commit

    def backoff_sleep(_delay: float) -> None:
        assert frozen.frozen_at is not None
        waits.append(time.monotonic() - frozen.frozen_at)
        if len(waits) == 2:
            os.kill(pid, signal.SIGCONT)

    consumer = ConfluentBatchConsumer(settings, settings.topics.usage_priced, "sink-freeze", commit_timeout_s=2.0)
    sink = StoreSink(
        frozen,  # type: ignore[arg-type]
        consumer,
        KafkaDeadLetter(settings),
        batch_size=50,
        batch_wait_s=1.0,
        sleep=backoff_sleep,
        backoff=Backoff(base_s=0.0),
    )
    counted = metrics.TRANSIENT.labels("sink", "broker")
    before = counted._value.get()
    caplog.set_level(logging.INFO, logger="stream_jobs.store_sink")
    try:
        seen = 0
        for _ in range(60):
            seen += sink.run_once()
            if seen >= 30 and committed_offsets(settings, "sink-freeze", settings.topics.usage_priced) == ends:
                break
    finally:
        os.kill(pid, signal.SIGCONT)  # never leave the broker frozen for the fixture's stop
        consumer.close()

    # Each unanswered commit gave up after its 2 s deadline, not librdkafka's 60 s socket timeout.
    # (A third may time out too if the resumed broker is slow to answer on a busy machine.)
    assert len(waits) >= 2 and 2.0 <= waits[0] < 4.0 and 4.0 <= waits[1] < 8.0
    assert sink.stats.retries == len(waits) and counted._value.get() - before == len(waits)
    assert seen == 30 and committed_offsets(settings, "sink-freeze", settings.topics.usage_priced) == ends
    assert store.query("SELECT count(), uniqExact(event_id) FROM usage_events FINAL").rows == [(30, 30)]
    said = [r.getMessage() for r in caplog.records if r.name == "stream_jobs.store_sink"]
    assert len(said) == 2, said  # the outage once when it starts, once when it ends
    assert said[0].startswith("broker unavailable (commit not answered within 2 s)")
    assert said[1].startswith("broker back after ") and said[1].endswith(f"({len(waits)} failed attempts)")
    store.close()


def test_a_message_polled_by_a_keepalive_is_held_not_dropped(kafka: KafkaSettings) -> None:
    producer = Producer(kafka.client_config())
    for i, value in enumerate(priced_values(6)):
        producer.produce(kafka.topics.usage_priced, value, partition=i % 3)
    assert producer.flush(30) == 0
    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, "sink-keepalive")
    try:
        deadline = time.monotonic() + 30
        while not consumer._held and time.monotonic() < deadline:  # unpaused: the poll returns records
            consumer.keepalive()
            time.sleep(0.05)
        assert consumer._held, "no record arrived through keepalive"
        got: list[tuple[int, int]] = []
        while len(got) < 6 and time.monotonic() < deadline:
            got += [(m.partition, m.offset) for m in consumer.poll_batch(10, 0.5)]
        assert sorted(got) == [(p, o) for p in range(3) for o in range(2)]
    finally:
        consumer.close()


def test_a_step_that_does_not_return_fails_the_live_check() -> None:
    sink = StoreSink(None, None, None)  # type: ignore[arg-type]
    run = SinkRun(sink, None, threading.Event(), running=True, wedged_after_s=120.0)  # type: ignore[arg-type]
    assert run.live() is None
    sink.beat -= 121.0
    assert run.live() == "sink stuck: one step has not returned for 121 s"
    run.running = False
    run.stop.set()
    assert run.live() is None  # a clean stop is not a failure
