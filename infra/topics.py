"""Create the pipeline's topics with partitions, replication and configs (idempotent, also under races)."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tokenledger.kafka_config import KafkaSettings
from tokenledger.replication import Replication, resolve

RETENTION_40_DAYS_MS = 40 * 86_400_000  # longer than the 35-day dedup horizon
# Simulations of past months (the demo, tests, benches) stamp records with their event times
# (see README, Event time); Kafka deletes records by timestamp, so their topics keep everything.
SIMULATION_RETENTION_MS = -1


def topic_specs(
    settings: KafkaSettings, replication: Replication, partitions: int = 3, retention_ms: int = RETENTION_40_DAYS_MS
) -> list[NewTopic]:
    """The topics and their configs."""
    t = settings.topics
    plain = {"retention.ms": str(retention_ms), **replication.topic_config()}
    compact = {"cleanup.policy": "compact", **replication.topic_config()}
    # Tombstones stay (a deleted id is never seeded again, see tokenledger.control.follow).
    control = {**compact, "delete.retention.ms": str(100 * 365 * 86_400_000), "min.compaction.lag.ms": "0"}
    forever = {"retention.ms": "-1", **replication.topic_config()}  # an audit trail is not deleted by age
    rf = replication.factor
    return [
        NewTopic(t.usage_raw, num_partitions=partitions, replication_factor=rf, config=plain),
        NewTopic(t.usage_priced, num_partitions=partitions, replication_factor=rf, config=plain),
        NewTopic(t.spend_deltas, num_partitions=partitions, replication_factor=rf, config=plain),
        NewTopic(t.thresholds, num_partitions=1, replication_factor=rf, config=plain),
        NewTopic(t.anomalies, num_partitions=1, replication_factor=rf, config=plain),
        NewTopic(t.dead_letter, num_partitions=1, replication_factor=rf, config=plain),
        # Latest breaker state per budget id: compacted, so a gateway bootstraps from it.
        NewTopic(t.breakers, num_partitions=1, replication_factor=rf, config=compact),
        # The control plane: one partition (one order for every change), compacted, kept forever.
        NewTopic(t.control, num_partitions=1, replication_factor=rf, config=control),
        NewTopic(t.control_audit, num_partitions=1, replication_factor=rf, config=forever),
    ]


@dataclass
class TopicsReport:
    """What :func:`ensure_topics` found and did."""

    replication: Replication
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    under_replicated: dict[str, int] = field(default_factory=dict)  # existing topic -> its replication factor


def ensure_topics(
    settings: KafkaSettings, partitions: int = 3, timeout_s: float = 15.0, retention_ms: int = RETENTION_40_DAYS_MS
) -> TopicsReport:
    """Create the missing topics; a topic another client created meanwhile counts as existing."""
    admin = AdminClient(settings.client_config())
    replication = resolve(settings, admin, timeout_s)
    report = TopicsReport(replication)
    existing = admin.list_topics(timeout=timeout_s).topics
    specs = topic_specs(settings, replication, partitions, retention_ms)
    wanted = [s for s in specs if s.topic not in existing]
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items() if wanted else []:
        try:
            future.result(timeout_s)
            report.created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            report.existed.append(name)
    for spec in specs:
        meta = existing.get(spec.topic)
        if meta is None:
            continue
        report.existed.append(spec.topic)
        factor = min((len(p.replicas) for p in meta.partitions.values()), default=replication.factor)
        if factor < replication.factor:
            report.under_replicated[spec.topic] = factor
    return report


def create_topics(
    settings: KafkaSettings, partitions: int = 3, timeout_s: float = 15.0, retention_ms: int = RETENTION_40_DAYS_MS
) -> list[str]:
    """Create missing topics. Returns the names created by this call."""
    return ensure_topics(settings, partitions, timeout_s, retention_ms).created
