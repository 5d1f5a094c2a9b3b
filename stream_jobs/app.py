"""The Faust application: settings and topics shared by the agents (each agent module owns its tables).

Configuration comes from the environment (see ``tokenledger.kafka_config``):
``TOKENLEDGER_KAFKA_BOOTSTRAP``, ``TOKENLEDGER_CONTROL_SEED`` (the control file that seeds an empty
control plane; ``TOKENLEDGER_BUDGETS``, an older budgets file, still works), ``TOKENLEDGER_APP_ID``,
``TOKENLEDGER_PARTITIONS``, ``TOKENLEDGER_AGENTS`` (``all``, or ``pricing`` / ``spend`` to run
the two agents as separate processes), ``TOKENLEDGER_SESSION_TIMEOUT_S`` (consumer group
session, 6 s by default: how long a killed worker's partitions wait before they move) and
``TOKENLEDGER_INSTANCE_ID`` (optional static group membership, see below).

Recovery after a crash: with the 6 s session (the broker's minimum by default) a worker killed
with -9 loses its partitions within 6 s, to the survivors or to its own restart, which joins at
once; a clean SIGTERM leaves the group, so its partitions move at once. With
``TOKENLEDGER_INSTANCE_ID`` set (unique per worker, stable across its restarts: a supervisor's
slot name) the worker is a static member: restarted, it takes its partitions back with no
rebalance at all, but a static member never leaves the group, so a worker stopped for good
keeps its partitions idle for one session. ``bench/bench_recovery.py`` measures both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faust

from stream_jobs import faust_fixes, log_levels  # noqa: F401 - faust_fixes patches a recovery race first
from tokenledger import metrics
from tokenledger.control.files import Record
from tokenledger.control.follow import WORKER_KINDS, follow, load_seed
from tokenledger.control.log import ControlLog
from tokenledger.control.state import ControlState
from tokenledger.kafka_config import KafkaSettings

log_levels.install()

SETTINGS = KafkaSettings.from_env()
SEED: list[Record] = load_seed()  # validated at import: a bad file stops the worker before it starts
PARTITIONS = int(os.environ.get("TOKENLEDGER_PARTITIONS", "3"))
DEDUP_HORIZON_S = 35 * 86_400
SESSION_TIMEOUT_S = float(os.environ.get("TOKENLEDGER_SESSION_TIMEOUT_S", "6"))
INSTANCE_ID = os.environ.get("TOKENLEDGER_INSTANCE_ID") or None
# The agents take up to BATCH_MAX events at a time (waiting at most BATCH_WITHIN_S to fill a
# batch) and write each touched table key once per batch and partition. The window is paid once
# per hop on the way to a breaker: 0.05 s kept crossing -> deny under 250 ms at p99 in the demo
# (p99 151-213 ms over two runs, against 251-265 ms with 0.1 s).
BATCH_MAX = int(os.environ.get("TOKENLEDGER_AGENT_BATCH", "2000"))
BATCH_WITHIN_S = float(os.environ.get("TOKENLEDGER_AGENT_BATCH_WITHIN_S", "0.05"))
# How often a worker commits the offsets its acknowledged batches reached. A commit is one small
# request; the interval is how far a restart replays and how long the committed position (what
# lag and "caught up" read) trails the work.
COMMIT_INTERVAL_S = float(os.environ.get("TOKENLEDGER_COMMIT_INTERVAL_S", "0.2"))


def _broker_credentials() -> dict[str, Any]:
    conf: dict[str, Any] = {}
    if SETTINGS.security_protocol:
        conf["broker_credentials"] = faust.SASLCredentials(
            username=SETTINGS.sasl_username or "",
            password=SETTINGS.sasl_password or "",
            mechanism=SETTINGS.sasl_mechanism or "PLAIN",
        )
    return conf


ROLE = os.environ.get("TOKENLEDGER_AGENTS", "all")  # all | pricing | spend: one process per role scales out
if ROLE not in ("all", "pricing", "spend"):
    raise SystemExit(f"TOKENLEDGER_AGENTS must be all, pricing or spend, not {ROLE!r}")
_BASE_ID = os.environ.get("TOKENLEDGER_APP_ID", "tokenledger")
DATADIR = Path(os.environ.get("TOKENLEDGER_DATADIR", "data/faust"))
DATADIR.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level

app = faust.App(
    _BASE_ID if ROLE == "all" else f"{_BASE_ID}-{ROLE}",
    broker=[f"kafka://{hp}" for hp in SETTINGS.bootstrap_servers.split(",")],
    store="memory://",
    topic_partitions=PARTITIONS,
    topic_replication_factor=SETTINGS.replication_factor or 1,  # resolved from the cluster at start (changelogs.py)
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=SESSION_TIMEOUT_S,
    broker_heartbeat_interval=min(3.0, SESSION_TIMEOUT_S / 3),
    consumer_group_instance_id=INSTANCE_ID,
    broker_commit_every=500,
    broker_commit_interval=COMMIT_INTERVAL_S,
    producer_linger_ms=5,
    producer_max_batch_size=65_536,
    producer_compression_type=None if SETTINGS.compression == "none" else SETTINGS.compression,  # changelogs
    web_enabled=False,
    datadir=str(DATADIR),
    table_cleanup_interval=3600.0,
    **_broker_credentials(),
)

t = SETTINGS.topics
raw_topic = app.topic(t.usage_raw, value_serializer="raw", key_serializer="raw", partitions=PARTITIONS)
priced_topic = app.topic(t.usage_priced, value_serializer="raw", key_serializer="raw", partitions=PARTITIONS)
deltas_topic = app.topic(t.spend_deltas, value_serializer="raw", key_serializer="raw", partitions=PARTITIONS)
thresholds_topic = app.topic(t.thresholds, value_serializer="json", key_serializer="raw", partitions=1)
breakers_topic = app.topic(t.breakers, value_serializer="json", key_serializer="raw", partitions=1)
anomalies_topic = app.topic(t.anomalies, value_serializer="json", key_serializer="raw", partitions=1)
dead_letter_topic = app.topic(t.dead_letter, value_serializer="json", key_serializer="raw", partitions=1)


class _Control:
    log: ControlLog | None = None
    offline: ControlState | None = None


def start_control() -> ControlLog:
    """Follow the control topic (seeding it the first time); the worker calls this before it starts."""
    if _Control.log is None:
        _Control.log = follow(SETTINGS, seed=SEED, kinds=WORKER_KINDS, hold=WORKER_KINDS)
    return _Control.log


def control_state() -> ControlState:
    """The live control state (in a process that never started following: the seed, applied locally)."""
    if _Control.log is not None:
        return _Control.log.state
    if _Control.offline is None:
        _Control.offline = ControlState.from_records(SEED)
    return _Control.offline


@app.timer(interval=5.0)  # type: ignore[untyped-decorator]
async def export_lag() -> None:
    """Consumer lag per source topic (highwater - last read offset) for Prometheus."""
    consumer = app.consumer
    by_topic: dict[str, int] = {}
    for tp in consumer.assignment():
        if tp.topic.endswith("-changelog"):
            continue
        read = getattr(consumer, "_read_offset", {}).get(tp)
        high = consumer.highwater(tp)
        if high is not None:
            by_topic[tp.topic] = by_topic.get(tp.topic, 0) + max(0, high - ((read or -1) + 1))
    for topic, lag in by_topic.items():
        metrics.CONSUMER_LAG.labels(app.conf.id, topic).set(lag)
