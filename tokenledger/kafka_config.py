"""Kafka connection settings from the environment: the embedded broker or any real cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tokenledger.errors import ConfigError
from tokenledger.kafka_logs import RDKAFKA

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"


@dataclass(frozen=True)
class Topics:
    """Topic names (override with ``TOKENLEDGER_TOPIC_<NAME>``)."""

    usage_raw: str = "usage-raw"
    usage_priced: str = "usage-priced"
    spend_deltas: str = "spend-deltas"
    thresholds: str = "thresholds"
    breakers: str = "breakers"
    anomalies: str = "anomalies"
    dead_letter: str = "dead-letter"
    control: str = "control"  # tenants, budgets, keys, defaults, FX (compacted; tokenledger.control)
    control_audit: str = "control-audit"  # every control change: who, what, when

    @classmethod
    def from_env(cls) -> Topics:
        """Topic names with environment overrides applied."""
        return cls(
            **{
                name: os.environ.get(f"TOKENLEDGER_TOPIC_{name.upper()}", default)
                for name, default in cls().__dict__.items()
            }
        )


@dataclass(frozen=True)
class KafkaSettings:
    """librdkafka client settings.

    ``assignment`` is ``group`` (default: subscribe and let the cluster balance partitions
    across the members of the consumer group) or ``static`` (assign every partition to this
    one process, commit offsets under the group id, no rebalancing).

    ``fetch_wait_ms`` is how long the broker may hold an empty fetch (librdkafka
    ``fetch.wait.max.ms``): Kafka answers as soon as data arrives, so it bounds idle
    round trips, not latency.

    ``compression`` is the codec of every record batch the project's producers write (librdkafka
    ``compression.type``; the Faust workers' own producer too). zstd by default: the project's
    JSON shrinks 5-16x, and it costs less CPU than lz4 here, because the Faust workers' client
    (aiokafka) compresses lz4 at level 9 (~47 MB/s) but zstd at level 3 (~620 MB/s); measured
    with ``bench/bench_pipeline.py`` (README). Consumers read any codec, whatever a client wrote.

    ``replication_factor`` and ``min_insync_replicas`` apply to every topic the project creates
    (its own and the workers' changelogs); ``None`` takes the cluster's defaults
    (``default.replication.factor``, ``min.insync.replicas``), see ``tokenledger.replication``.
    """

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    assignment: str = "group"
    fetch_wait_ms: int = 500
    compression: str = "zstd"
    topics: Topics = field(default_factory=Topics)
    replication_factor: int | None = None
    min_insync_replicas: int | None = None

    @classmethod
    def from_env(cls) -> KafkaSettings:
        """Read ``TOKENLEDGER_KAFKA_*`` variables."""
        env = os.environ.get
        return cls(
            bootstrap_servers=env("TOKENLEDGER_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
            security_protocol=env("TOKENLEDGER_KAFKA_SECURITY_PROTOCOL"),
            sasl_mechanism=env("TOKENLEDGER_KAFKA_SASL_MECHANISM"),
            sasl_username=env("TOKENLEDGER_KAFKA_SASL_USERNAME"),
            sasl_password=env("TOKENLEDGER_KAFKA_SASL_PASSWORD"),
            assignment=env("TOKENLEDGER_KAFKA_ASSIGNMENT", "group"),
            fetch_wait_ms=int(env("TOKENLEDGER_KAFKA_FETCH_WAIT_MS", "500")),
            compression=_codec(env("TOKENLEDGER_KAFKA_COMPRESSION", "zstd")),
            topics=Topics.from_env(),
            replication_factor=_int_or_none(env("TOKENLEDGER_REPLICATION_FACTOR")),
            min_insync_replicas=_int_or_none(env("TOKENLEDGER_MIN_INSYNC_REPLICAS")),
        )

    def client_config(self) -> dict[str, Any]:
        """Common librdkafka config (bootstrap plus SASL/TLS where given).

        librdkafka logs through Python logging (logger ``rdkafka``), so a process's filters
        (``tokenledger.quiet``) see its lines instead of them going to stderr unfiltered.
        """
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            # An idle connection closed by the broker is routine, not worth a log line.
            "log.connection.close": False,
            "logger": RDKAFKA,
        }
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password
        return conf

    def producer_config(self) -> dict[str, Any]:
        """:meth:`client_config` plus what every producer of the project shares: idempotent, acks=all, compressed."""
        return {
            **self.client_config(),
            "enable.idempotence": True,  # a retried batch is written once, in order
            "acks": "all",
            "compression.type": self.compression,
        }


CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def _codec(name: str) -> str:
    if name not in CODECS:
        raise ConfigError(f"TOKENLEDGER_KAFKA_COMPRESSION must be one of {', '.join(CODECS)}, not {name!r}")
    return name


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value else None
