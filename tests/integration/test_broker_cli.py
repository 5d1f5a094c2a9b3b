"""``python -m infra broker-start/broker-stop`` as an operator runs them: from any directory,
data kept across restarts, a free port when the asked one is taken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from confluent_kafka import Producer

from infra.broker import free_port
from tests.integration.test_stream_pipeline import read_messages
from tokenledger.kafka_config import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]


def infra(args: list[str], data: Path, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "infra", *args],
        env={**os.environ, "TOKENLEDGER_BROKER_DIR": str(data), "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return done.stdout


def test_start_stop_from_anywhere_keeps_data_and_avoids_a_taken_port(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "kafka", tmp_path / "elsewhere"
    elsewhere.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        out = infra(["broker-start", "--port", str(busy), "--controller-port", str(free_port())], data, tmp_path)
    assert f"port {busy} is taken; using " in out
    port = int(out.split("using ")[1].split(":")[0])
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    try:
        producer = Producer(settings.client_config())
        producer.produce("kept", b"before the restart")
        assert producer.flush(30) == 0
        assert "stopped Kafka" in infra(["broker-stop"], data, elsewhere)
        assert "Kafka is not running" in infra(["broker-stop"], data, elsewhere)
        out = infra(["broker-start", "--port", str(port), "--controller-port", str(free_port())], data, elsewhere)
        assert f"127.0.0.1:{port} ready" in out
        assert "already running" in infra(["broker-start", "--port", str(port)], data, elsewhere)
        assert [m.value() for m in read_messages(settings, "kept")] == [b"before the restart"]
    finally:
        infra(["broker-stop"], data, elsewhere)
