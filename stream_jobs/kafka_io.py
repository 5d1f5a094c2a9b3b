"""confluent-kafka adapters behind the sink's narrow interfaces."""

from __future__ import annotations

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from stream_jobs.store_sink import Message
from tokenledger import metrics
from tokenledger.kafka_config import KafkaSettings


class ConfluentBatchConsumer:
    """Manual-commit consumer of one topic (static assignment or group subscription)."""

    def __init__(self, settings: KafkaSettings, topic: str, group_id: str) -> None:
        self._topic, self._group = topic, group_id
        self._consumer = Consumer(
            {
                **settings.client_config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            }
        )
        if settings.assignment == "group":
            self._consumer.subscribe([topic])
        else:
            meta = self._consumer.list_topics(topic, timeout=10)
            parts = [TopicPartition(topic, p) for p in sorted(meta.topics[topic].partitions)]
            committed = self._consumer.committed(parts, timeout=10)
            self._consumer.assign(
                [
                    TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                    for tp in committed
                ]
            )

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages."""
        out = []
        for m in self._consumer.consume(max_messages, timeout_s):
            if m.error():
                continue  # partition EOF and transient fetch errors: librdkafka retries
            out.append(Message(m.topic() or "", m.partition() or 0, m.offset() or 0, m.value()))
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Synchronous commit; raises on failure so the batch is not reported done."""
        self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        metrics.CONSUMER_LAG.labels(self._group, self._topic).set(self.lag())

    def lag(self) -> int:
        """Messages between the committed offsets and the ends of the assigned partitions."""
        total = 0
        for tp in self._consumer.position(self._consumer.assignment()):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            if tp.offset >= 0 and high >= 0:
                total += max(0, high - tp.offset)
        return total

    def pause(self) -> None:
        """Pause every assigned partition."""
        self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        """Resume every assigned partition."""
        self._consumer.resume(self._consumer.assignment())

    def keepalive(self) -> None:
        """Serve callbacks and group heartbeats while paused."""
        self._consumer.poll(0)

    def close(self) -> None:
        """Leave cleanly."""
        self._consumer.close()


class KafkaDeadLetter:
    """Dead letters as JSON ``{reason, origin, value}``; flushed before the batch commits."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._topic = settings.topics.dead_letter
        self._producer = Producer({**settings.client_config(), "enable.idempotence": False, "acks": "all"})
        self.errors: list[str] = []

    def send(self, value: bytes | None, reason: str, origin: Message) -> None:
        """Publish one dead letter and wait for the broker's acknowledgement."""
        body = orjson.dumps(
            {
                "reason": reason,
                "origin": {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset},
                "value": (value or b"").decode("utf-8", "replace"),
            }
        )
        self._producer.produce(self._topic, body, on_delivery=self._on_delivery)
        if self._producer.flush(10) > 0 or self.errors:
            raise KafkaException(f"dead letter not acknowledged: {self.errors}")

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self.errors.append(str(err))
