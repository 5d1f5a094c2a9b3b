"""``python -m infra {up,down,broker-install,broker-start,broker-stop,topics}``: run the pipeline, or just its broker.

``up`` runs every process of the pipeline in the foreground and ``down`` stops it (see
:mod:`infra.supervisor`).

``broker-install`` resolves the Apache Kafka jars with Maven (``make install`` runs it);
``broker-start`` runs a single-node KRaft Kafka on loopback in the background, its data and pid
file under ``data/kafka/`` of the checkout (kept across restarts); ``broker-stop`` ends it
cleanly from any directory; ``topics`` creates the pipeline topics on whatever
``TOKENLEDGER_KAFKA_BOOTSTRAP`` points at (the embedded broker or a real cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from infra.broker import ROOT, BrokerSetupError, KafkaBroker, ensure_jars, free_port, port_is_free
from infra.supervisor import DEFAULT_DATA, down, up
from infra.topics import RETENTION_40_DAYS_MS, ensure_topics
from tokenledger.kafka_config import KafkaSettings

DATA = Path(os.environ.get("TOKENLEDGER_BROKER_DIR", str(ROOT / "data" / "kafka")))
PIDFILE = DATA / "broker.json"
DEFAULT_PORT = 19092


def _running() -> dict[str, int] | None:
    if not PIDFILE.exists():
        return None
    info: dict[str, int] = json.loads(PIDFILE.read_text())
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return None
    return info


def broker_start(port: int, controller_port: int) -> int:
    """Start the broker in the background unless it already runs; print its bootstrap."""
    running = _running()
    if running is not None:
        print(f"Kafka already running on 127.0.0.1:{running['port']} (pid {running['pid']})")
        return 0
    if not port_is_free(port):
        taken, port = port, free_port()
        print(f"port {taken} is taken; using {port}: export TOKENLEDGER_KAFKA_BOOTSTRAP=127.0.0.1:{port}")
    if not port_is_free(controller_port):
        controller_port = free_port()
    broker = KafkaBroker(DATA, port, controller_port).start()
    PIDFILE.write_text(json.dumps({"pid": broker.pid, "port": port, "controller_port": controller_port}))
    print(
        f"Kafka {broker.bootstrap} ready (pid {broker.pid}, data {DATA}, log {broker.log_path}); "
        "stop: python -m infra broker-stop"
    )
    return 0


def broker_stop(timeout_s: float = 60.0) -> int:
    """SIGTERM the recorded broker and wait for its clean shutdown."""
    running = _running()
    if running is None:
        print("Kafka is not running (no live pid in data/kafka/broker.json)")
        PIDFILE.unlink(missing_ok=True)
        return 0
    pid = running["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        print(f"Kafka (pid {pid}) did not stop in {timeout_s:.0f} s; killed")
    PIDFILE.unlink(missing_ok=True)
    print(f"stopped Kafka (pid {pid})")
    return 0


def main() -> int:  # noqa: PLR0911 - one return per command
    """Entry point."""
    ap = argparse.ArgumentParser(prog="infra", description=__doc__)
    ap.add_argument("command", choices=["up", "down", "broker-install", "broker-start", "broker-stop", "topics"])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="up/down: data directory (default ./data)")
    ap.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="up: how many gateways; more than 1 also starts a Redis they share rate limits through (default 1)",
    )
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="client port (a free one if taken)")
    ap.add_argument("--controller-port", type=int, default=DEFAULT_PORT + 1)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument(
        "--replication-factor",
        type=int,
        help="topics: replicas per partition (default: TOKENLEDGER_REPLICATION_FACTOR, else the cluster's "
        "default.replication.factor)",
    )
    ap.add_argument(
        "--min-insync-replicas",
        type=int,
        help="topics: min.insync.replicas set on each topic (default: TOKENLEDGER_MIN_INSYNC_REPLICAS, else the "
        "cluster's default applies)",
    )
    ap.add_argument(
        "--retention-ms",
        type=int,
        default=RETENTION_40_DAYS_MS,
        help="topics: retention of the non-compacted topics (default 40 days; -1 keeps everything, for a "
        "simulation whose records carry past timestamps)",
    )
    args = ap.parse_args()
    try:
        if args.command == "up":
            return up(args.data, args.gateways)
        if args.command == "down":
            return down(args.data)
        if args.command == "broker-install":
            print(f"Kafka jars in {ensure_jars()}")
            return 0
        if args.command == "broker-start":
            return broker_start(args.port, args.controller_port)
        if args.command == "broker-stop":
            return broker_stop()
    except BrokerSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = KafkaSettings.from_env()
    if args.replication_factor is not None:
        settings = replace(settings, replication_factor=args.replication_factor)
    if args.min_insync_replicas is not None:
        settings = replace(settings, min_insync_replicas=args.min_insync_replicas)
    report = ensure_topics(settings, args.partitions, retention_ms=args.retention_ms)
    r = report.replication
    isr = f"min.insync.replicas {r.min_insync}" if r.min_insync is not None else "the cluster's min.insync.replicas"
    print(f"replication factor {r.factor}, {isr}")
    print("created:", ", ".join(report.created) or "(all existed)")
    for name, factor in sorted(report.under_replicated.items()):
        print(
            f"warning: {name} exists with replication factor {factor}, not {r.factor} "
            "(kafka-reassign-partitions.sh raises it)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
