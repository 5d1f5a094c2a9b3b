"""Thin, non-blocking publisher of usage events (confluent-kafka).

``publish`` never blocks the calling service: it enqueues into librdkafka's bounded buffer
and returns. When that buffer is full, or the broker reports a failed delivery, the event
goes to a local spool file (JSON lines) instead of being dropped; ``drain_spool`` re-sends
it, and ``close`` (also registered at exit) flushes and drains. Nothing is silently lost:
``stats`` counts what was delivered, spooled and failed.
"""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from confluent_kafka import KafkaError, Producer

from producers.events import kafka_key
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema import UsageEventV1
from tokenledger.schema.fastdecode import encode_usage_event

log = logging.getLogger(__name__)


class ProducerLike(Protocol):
    """The parts of ``confluent_kafka.Producer`` used here."""

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None: ...  # noqa: D102
    def poll(self, timeout: float) -> int: ...  # noqa: D102
    def flush(self, timeout: float) -> int: ...  # noqa: D102


@dataclass
class PublisherStats:
    """Counters."""

    enqueued: int = 0
    delivered: int = 0
    spooled: int = 0
    failed_deliveries: int = 0
    resent_from_spool: int = 0


class UsagePublisher:
    """Publishes v1 usage events to ``usage-raw``."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        spool: Path | None = None,
        max_buffered: int = 100_000,
        producer: ProducerLike | None = None,
    ) -> None:
        self._topic = settings.topics.usage_raw
        self._producer: ProducerLike = producer or cast(
            ProducerLike,
            Producer(
                {
                    **settings.client_config(),
                    "queue.buffering.max.messages": max_buffered,
                    "linger.ms": 20,
                    "acks": "all",
                    "message.timeout.ms": 120_000,
                }
            ),
        )
        self._spool = spool or Path("data/spool/usage-raw.jsonl")
        self._lock = threading.Lock()
        self.stats = PublisherStats()
        self._closed = False
        atexit.register(self.close)

    def publish(self, event: UsageEventV1) -> None:
        """Enqueue one event; spool it when the local buffer is full. Never blocks."""
        self._send(kafka_key(event), encode_usage_event(event))

    def publish_raw(self, key: bytes, value: bytes) -> None:
        """Enqueue bytes as they are (replays, and the demo's deliberately invalid events)."""
        self._send(key, value)

    def _send(self, key: bytes, value: bytes) -> None:
        try:
            self._producer.produce(self._topic, value, key, on_delivery=self._on_delivery)
            self.stats.enqueued += 1
        except BufferError:
            self._to_spool(key, value)
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        self.stats.failed_deliveries += 1
        log.warning("usage event not delivered (%s); spooled", err)
        self._to_spool(msg.key() or b"", msg.value() or b"")

    def _to_spool(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._spool.parent.mkdir(parents=True, exist_ok=True)
            with self._spool.open("ab") as f:
                f.write(key.replace(b"\t", b" ") + b"\t" + value.replace(b"\n", b" ") + b"\n")
            self.stats.spooled += 1

    def drain_spool(self) -> int:
        """Re-send spooled events (identity keeps the pipeline from double counting)."""
        with self._lock:
            if not self._spool.exists():
                return 0
            lines = self._spool.read_bytes().splitlines()
            self._spool.unlink()
        for line in lines:
            key, _, value = line.partition(b"\t")
            self._send(key, value)
            self.stats.resent_from_spool += 1
        return len(lines)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, then try the spool once more, then release the Kafka client (idempotent).

        Registered at exit until called: afterwards nothing holds the client, so its threads end
        and it stops reconnecting to a broker that went away.
        """
        if self._closed:
            return
        self.flush(timeout_s)
        if self.drain_spool():
            self.flush(timeout_s)
        self._closed = True
        atexit.unregister(self.close)
        self._producer = _ClosedProducer()

    def __enter__(self) -> UsagePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ClosedProducer:
    """Stands in for the released client: a publish after close is a programming error."""

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        raise RuntimeError("UsagePublisher is closed")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0
