from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from producers.adapters import from_dict
from producers.events import Attribution, EventFactory
from producers.publisher import UsagePublisher
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema.fastdecode import decode_usage_event


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
    got: dict[str, tuple[bytes | None, int]] = {}
    idle = 0
    while idle < 3:
        msgs = [m for m in c.consume(1000, 0.5) if not m.error()]
        idle = 0 if msgs else idle + 1
        for m in msgs:
            ev = decode_usage_event(m.value() or b"")
            got[ev.id] = (m.key(), ev.data.input_tokens)
    c.close()
    assert len(got) == 500
    assert got["r7:final"] == (b"//svc/a|r7", 7)
