"""A three-node Apache Kafka cluster (KRaft, each node broker and controller) on loopback, from the project's jars.

For the production-layout bench (``bench/bench_cluster.py``): default replication factor 3,
``min.insync.replicas`` 2, internal topics replicated alike. Each node is a
:class:`~infra.broker.KafkaBroker` with its own data directory and ports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from infra.broker import BrokerSetupError, KafkaBroker, cluster_id, free_port


@dataclass
class Cluster:
    """The nodes and the bootstrap string naming all of them."""

    nodes: list[KafkaBroker]

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``."""
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id: int) -> KafkaBroker:
        """The node with ``node_id``."""
        return next(n for n in self.nodes if n.node_id == node_id)

    def wait_brokers(self, count: int, timeout_s: float = 120.0) -> None:
        """Until the metadata lists ``count`` brokers.

        Raises:
            BrokerSetupError: Not within ``timeout_s``.
        """
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout_s
        seen = 0  # consecutive answers listing every broker: a node may still be registering
        while time.monotonic() < deadline:
            try:
                seen = seen + 1 if len(admin.list_topics(timeout=2).brokers) >= count else 0
            except Exception:  # nodes still starting
                seen = 0
            if seen >= 5:
                return
            time.sleep(0.3)
        raise BrokerSetupError(f"the cluster did not list {count} brokers within {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM every node."""
        for n in self.nodes:
            n.stop()


def start_cluster(data_dir: Path, size: int = 3, heap_mb: int = 384) -> Cluster:
    """Format and start ``size`` nodes; returns once every broker is listed."""
    ports = [(free_port(), free_port()) for _ in range(size)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
    cid = cluster_id()
    nodes = [
        KafkaBroker(
            data_dir / f"node{i + 1}", p, c, heap_mb=heap_mb, node_id=i + 1, voters=voters, replicas=size, cluster=cid
        )
        for i, (p, c) in enumerate(ports)
    ]
    for n in nodes:
        n.start(wait=False)
    cluster = Cluster(nodes)
    cluster.wait_brokers(size)
    return cluster
