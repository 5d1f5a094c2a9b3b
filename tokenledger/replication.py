"""Replication of the topics the project creates: the cluster's defaults unless configured.

A topic created with replication factor 1 on a three-broker cluster loses data with one disk
and stops its stage while its only broker is down. Every topic the project creates (its own,
``python -m infra topics``, and the workers' changelogs and Faust's internal topics) takes the
replication factor and ``min.insync.replicas`` from :class:`KafkaSettings` when set
(``TOKENLEDGER_REPLICATION_FACTOR``, ``TOKENLEDGER_MIN_INSYNC_REPLICAS``, ``infra topics
--replication-factor``), else from a broker's ``default.replication.factor`` and
``min.insync.replicas``: on the embedded single broker 1 and 1, on a production cluster what
its operators chose. Producers write with ``acks=all``, so with RF 3 and min ISR 2 a write
survives the loss of one broker and the stage keeps going.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from tokenledger.kafka_config import KafkaSettings


@dataclass(frozen=True)
class Replication:
    """How topics are created: their replication factor and any ``min.insync.replicas`` to set on them."""

    factor: int
    min_insync: int | None  # None: the topic inherits the cluster's default

    def topic_config(self) -> dict[str, str]:
        """Topic-level configs to add at creation."""
        return {"min.insync.replicas": str(self.min_insync)} if self.min_insync is not None else {}


def resolve(settings: KafkaSettings, admin: AdminClient | None = None, timeout_s: float = 15.0) -> Replication:
    """The configured replication, the unset parts read from the cluster (one broker's configs)."""
    if settings.replication_factor is not None:
        return Replication(settings.replication_factor, settings.min_insync_replicas)
    admin = admin or AdminClient(settings.client_config())
    brokers = sorted(admin.list_topics(timeout=timeout_s).brokers)
    resource = ConfigResource(ResourceType.BROKER, str(brokers[0]))
    configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)
    # Not lowered to the brokers seen now: a cluster still registering a broker would silently
    # get under-replicated topics; Kafka refuses the creation instead, and says why.
    return Replication(int(configs["default.replication.factor"].value), settings.min_insync_replicas)
