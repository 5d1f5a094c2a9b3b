from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from producers.adapters import from_dict
from producers.events import Attribution, EventFactory
from producers.publisher import UsagePublisher
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.raw_batch import is_batch, partition_for, split_batch


def test_publisher_delivers_everything_keyed_by_request(kafka: KafkaSettings, tmp_path: Path) -> None:
    who = Attribution("//svc/a", {"tenant": "acme"})
    factory = EventFactory(clock=lambda: datetime(2026, 10, 1, tzinfo=UTC))
    pub = UsagePublisher(kafka, spool=tmp_path / "spool.jsonl")
    for i in range(500):
        rec = {"provider": "openai", "model": "gpt-4o", "request_id": f"r{i}", "input_tokens": i, "output_tokens": 1}
        pub.publish(from_dict(rec, who, factory))
    pub.close()
    assert (pub.stats.enqueued, pub.stats.delivered, pub.stats.spooled) == (500, 500, 0)

    c = Consumer({**kafka.client_config(), "group.id": "check", "enable.auto.commit": False})
    c.assign([TopicPartition(kafka.topics.usage_raw, p, 0) for p in range(3)])
    got: dict[str, tuple[int | None, int]] = {}
    messages = idle = 0
    while idle < 3:
        msgs = [m for m in c.consume(1000, 0.5) if not m.error()]
        idle = 0 if msgs else idle + 1
        for m in msgs:
            messages += 1
            value = m.value() or b""
            # Batches of the events of one partition; a batch the linger timer sent with one event goes as that event.
            for raw in split_batch(value) if is_batch(value) else [value]:
                ev = decode_usage_event(raw)
                got[ev.id] = (m.partition(), ev.data.input_tokens)
    c.close()
    assert len(got) == 500 and messages < 50
    # Every event in the partition its key picks with Kafka's default partitioner.
    assert all(
        p == partition_for(f"//svc/a|r{i}".encode(), 3)
        for i, (p, _) in enumerate(got[f"r{i}:final"] for i in range(500))
    )
    assert got["r7:final"][1] == 7
