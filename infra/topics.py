"""Create the pipeline's topics with partitions and configs (idempotent)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tokenledger.kafka_config import KafkaSettings

RETENTION_40_DAYS_MS = str(40 * 86_400_000)  # longer than the 35-day dedup horizon


def topic_specs(settings: KafkaSettings, partitions: int = 3) -> list[NewTopic]:
    """The topics and their configs."""
    t = settings.topics
    plain = {"retention.ms": RETENTION_40_DAYS_MS}
    return [
        NewTopic(t.usage_raw, num_partitions=partitions, replication_factor=1, config=plain),
        NewTopic(t.usage_priced, num_partitions=partitions, replication_factor=1, config=plain),
        NewTopic(t.spend_deltas, num_partitions=partitions, replication_factor=1, config=plain),
        NewTopic(t.thresholds, num_partitions=1, replication_factor=1, config=plain),
        NewTopic(t.anomalies, num_partitions=1, replication_factor=1, config=plain),
        NewTopic(t.dead_letter, num_partitions=1, replication_factor=1, config=plain),
        # Latest breaker state per budget id: compacted, so a gateway bootstraps from it.
        NewTopic(t.breakers, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}),
    ]


def create_topics(settings: KafkaSettings, partitions: int = 3, timeout_s: float = 15.0) -> list[str]:
    """Create missing topics. Returns the names created by this call."""
    admin = AdminClient(settings.client_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [s for s in topic_specs(settings, partitions) if s.topic not in existing]
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items() if wanted else []:
        future.result(timeout_s)
        created.append(name)
    return created
