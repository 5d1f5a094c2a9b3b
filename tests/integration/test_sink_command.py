"""``python -m stream_jobs sink`` as an operator runs it: a clear line on an unmigrated store, a clean SIGTERM."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from infra.workers import Proc, kafka_env, sink_command
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate


def test_unmigrated_store_is_one_line_and_exit_2(kafka: KafkaSettings, tmp_path: Path) -> None:
    done = subprocess.run(
        sink_command(f"chdb://{tmp_path / 'empty'}", "sink-unmigrated"),
        env=kafka_env(kafka),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "python -m stream_jobs sink: error: the store has no table usage_events: run `python -m billing migrate` first"
    ]


def test_sigterm_stops_cleanly_and_releases_the_store(kafka: KafkaSettings, tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    store.close()
    sink = Proc(sink_command(f"chdb://{tmp_path / 'chdb'}", "sink-sigterm"), kafka_env(kafka), tmp_path / "sink.log")
    sink.start()
    deadline = time.monotonic() + 60
    while "sink: " not in sink.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    started = time.monotonic()
    assert sink.stop() == 0
    assert time.monotonic() - started < 10
    assert "sink stopped: 0 rows in 0 batches" in sink.log.read_text()
    reopened = ChdbStore(tmp_path / "chdb")  # the embedded store is free again
    assert reopened.query("SELECT count() FROM usage_events").rows[0][0] == 0
    reopened.close()
