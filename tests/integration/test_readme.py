"""The README's ingest example, run as written (with the test's port), against a live ingest."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson

from infra.broker import free_port
from infra.workers import Proc, kafka_env
from tests.integration.test_stream_pipeline import raw_events, wait_for
from tests.readme import block
from tokenledger.kafka_config import KafkaSettings


def test_ingest_curl_example(kafka: KafkaSettings, tmp_path: Path) -> None:
    text = block("localhost:8070/v1/events")
    serve = next(line for line in text.splitlines() if line.startswith("python -m producers.ingest serve"))
    port = free_port()
    command = [sys.executable, *serve.split("#")[0].split()[1:]]
    command[command.index("8070")] = str(port)
    proc = Proc(command, kafka_env(kafka), tmp_path / "ingest.log").start()
    try:
        proc.wait_log("ingest on ")
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200, 60, "ready"
        )
        script = "\n".join(line for line in text.splitlines() if not line.startswith("python -m"))
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace("localhost:8070", f"127.0.0.1:{port}")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        assert proc.stop() == 0
    assert done.returncode == 0, done.stderr
    expected = next(line.removeprefix("# ") for line in text.splitlines() if line.startswith("# {"))
    assert orjson.loads(done.stdout) == orjson.loads(expected)
    [event] = raw_events(kafka)
    assert (event["id"], event["data"]["labels"]["tenant"]) == ("evt-1", "acme")
