"""Create the worker's table changelog topics before Faust starts, and wait until they are visible.

They (and Faust's leader topic) get the cluster's replication unless configured
(``tokenledger.replication``): Faust's own default would be a replication factor of 1.

When two workers start together under load, Faust can write a table before its consumer's
metadata lists the changelog topic it just created; the table then sees a changelog with 0
partitions and the agent crashes with ``PartitionsMismatch`` (seen here in 1 of 10 runs of
the two-worker crash test with one core kept busy). Creating them up front, with the same
partitions and compaction Faust uses, removes the window.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tokenledger.kafka_config import KafkaSettings
from tokenledger.replication import resolve

# A restarted worker replays its tables' changelogs from the start; compaction only ever cleans
# closed segments, and Kafka's defaults (1 GiB, 7 days) keep a busy table's whole history in the
# open one. Rolling segments every 15 s (or 64 MiB) bounds a replay to the live keys plus
# seconds of updates: with 5 min, a restarted spend worker's replay grew 2.5 s per 25 s of a
# 1,000 requests/s run (bench_recovery: 9.9, 11.9, 14.9 s); with 15 s it stayed at 5.8-6.0 s.
COMPACTION = {"segment.ms": "15000", "segment.bytes": str(64 << 20), "min.cleanable.dirty.ratio": "0.1"}


def ensure_changelogs(app: Any, settings: KafkaSettings, timeout_s: float = 60.0) -> list[str]:
    """Create each registered table's changelog topic if missing; return the names, all visible.

    Raises:
        KafkaException: A topic could not be created, or did not show its partitions in time.
    """
    admin = AdminClient(settings.client_config())
    replication = resolve(settings, admin)
    # Faust creates its other internal topics (the assignor's leader topic) with this factor.
    app.conf.topic_replication_factor = replication.factor
    wanted = {t.changelog_topic_name: int(t.partitions or app.conf.topic_partitions) for t in app.tables.values()}
    wanted[f"{app.conf.id}-__assignor-__leader"] = 1
    compact = {"cleanup.policy": "compact", **COMPACTION, **replication.topic_config()}
    specs = [
        NewTopic(
            name,
            num_partitions=n,
            replication_factor=replication.factor,
            config=compact if not name.endswith("-__leader") else replication.topic_config(),
        )
        for name, n in wanted.items()
    ]
    for future in admin.create_topics(specs, request_timeout=timeout_s).values():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=10).topics
        if all(name in topics and len(topics[name].partitions) == n for name, n in wanted.items()):
            return sorted(wanted)
        if time.monotonic() > deadline:
            raise KafkaException(f"changelog topics not visible after {timeout_s:.0f} s: {sorted(wanted)}")
        time.sleep(0.2)
