from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from infra.broker import KafkaBroker, start_broker
from infra.topics import SIMULATION_RETENTION_MS, create_topics
from tokenledger.kafka_config import KafkaSettings, Topics
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One Apache Kafka 3.9 (KRaft) for the session; tests isolate themselves by topic names."""
    b = start_broker(tmp_path_factory.mktemp("kafka"))
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, which it may stop and restart."""
    b = start_broker(tmp_path / "kafka")
    yield b
    b.stop()


@pytest.fixture
def kafka(broker: KafkaBroker) -> KafkaSettings:
    """Fresh, uniquely named topics per test on the shared broker."""
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{v}-{suffix}" for k, v in Topics().__dict__.items()})
    settings = replace(KafkaSettings(bootstrap_servers=broker.bootstrap), topics=topics)
    create_topics(settings, partitions=3, retention_ms=SIMULATION_RETENTION_MS)
    return settings


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChdbStore]:
    s = ChdbStore(tmp_path / "chdb")
    migrate(s)
    yield s
    s.close()
