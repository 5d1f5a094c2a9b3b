"""Permanent errors stop with one line and a non-zero exit; transient ones are retried and counted."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from infra.workers import kafka_env, sink_command
from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.store_sink import Backoff, StoreSink
from tests.factories import priced_values
from tokenledger import metrics
from tokenledger.errors import EXIT_PERMANENT, EXIT_TRANSIENT
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.base import StoreRejected
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def billing(*args: str) -> list[str]:
    return [sys.executable, "-m", "billing", *args]


def test_unreachable_store_server_is_transient_exit_75() -> None:
    done = run(billing("--store", "clickhouse://default:@127.0.0.1:1/tokenledger", "bills", "--month", "2026-03"))
    assert done.returncode == EXIT_TRANSIENT
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("python -m billing: unavailable, try again later: ")


def test_bad_store_url_and_bad_budgets_are_permanent_exit_2(tmp_path: Path) -> None:
    done = run(billing("--store", "postgres://x/y", "bills", "--month", "2026-03"))
    assert done.returncode == EXIT_PERMANENT
    assert done.stderr == "python -m billing: error: unsupported store URL scheme: 'postgres'\n"
    bad = tmp_path / "budgets.yaml"
    bad.write_text("timezone: Mars/Olympus\nbudgets: []\n")
    done = run(billing("--store", f"chdb://{tmp_path / 'chdb'}", "--budgets", str(bad), "forecast"))
    assert done.returncode == EXIT_PERMANENT
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("python -m billing: error: ")
    done = run(billing("--store", f"chdb://{tmp_path / 'chdb'}", "--budgets", str(tmp_path / "none.yaml"), "forecast"))
    assert done.returncode == EXIT_PERMANENT
    assert done.stderr.count("\n") == 1 and "none.yaml" in done.stderr


def test_refused_kafka_credentials_stop_the_sink_with_one_line(kafka: KafkaSettings, tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    store.close()
    env = {
        **kafka_env(kafka),
        "TOKENLEDGER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",  # the broker's listener has no SASL
        "TOKENLEDGER_KAFKA_SASL_MECHANISM": "PLAIN",
        "TOKENLEDGER_KAFKA_SASL_USERNAME": "tokenledger",
        "TOKENLEDGER_KAFKA_SASL_PASSWORD": "wrong",
        "TOKENLEDGER_METRICS_PORT": "0",
    }
    done = run(sink_command(f"chdb://{tmp_path / 'chdb'}", "sink-badauth"), env)
    assert done.returncode == EXIT_PERMANENT
    line = last_line(done)
    assert line.startswith(
        "python -m stream_jobs sink: error: Kafka refused consumer group sink-badauth: _AUTHENTICATION"
    )


def test_missing_table_mid_run_is_permanent_and_commits_nothing(kafka: KafkaSettings, store: ChdbStore) -> None:
    group = f"sink-{uuid.uuid4().hex[:6]}"
    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, group)
    sink = StoreSink(store, consumer, KafkaDeadLetter(kafka), batch_size=50, batch_wait_s=0.5, sleep=lambda _: None)
    producer = Producer(kafka.client_config())
    for value in priced_values(20):
        producer.produce(kafka.topics.usage_priced, value, key=b"acme")
    assert producer.flush(30) == 0
    store.execute("DROP TABLE usage_events")  # an operator's mistake, not an outage
    with pytest.raises(StoreRejected, match="UNKNOWN_TABLE"):
        for _ in range(40):
            sink.run_once()
    assert sink.stats.retries == 0 and sink.stats.batches == 0
    consumer.close()


class FlakyStore:
    """The real store, refusing the first ``down`` inserts as a restarting server would."""

    def __init__(self, inner: ChdbStore, down: int) -> None:
        self.inner, self.down = inner, down

    def _guard(self) -> None:
        if self.down > 0:
            self.down -= 1
            from tokenledger.store.base import StoreUnavailable  # noqa: PLC0415

            raise StoreUnavailable("Connection refused (simulated restart)")

    def insert(self, table: str, columns: object, rows: object) -> None:
        self._guard()
        self.inner.insert(table, columns, rows)  # type: ignore[arg-type]

    def insert_lines(self, table: str, columns: object, lines: object) -> None:
        self._guard()
        self.inner.insert_lines(table, columns, lines)  # type: ignore[arg-type]

    def insert_arrow(self, table: str, data: object) -> None:
        self._guard()
        self.inner.insert_arrow(table, data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_store_away_is_transient_retried_and_counted(kafka: KafkaSettings, store: ChdbStore) -> None:
    counted = metrics.TRANSIENT.labels("sink", "store")
    before = counted._value.get()
    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, f"sink-{uuid.uuid4().hex[:6]}")
    sink = StoreSink(
        FlakyStore(store, 3),  # type: ignore[arg-type]
        consumer,
        KafkaDeadLetter(kafka),
        batch_size=50,
        batch_wait_s=0.5,
        sleep=lambda _: None,
        backoff=Backoff(base_s=0.0),
    )
    producer = Producer(kafka.client_config())
    for value in priced_values(10):
        producer.produce(kafka.topics.usage_priced, value, key=b"acme")
    assert producer.flush(30) == 0
    seen = 0
    for _ in range(40):
        seen += sink.run_once()
        if seen >= 10:
            break
    assert seen == 10 and sink.stats.retries == 3 and counted._value.get() - before == 3
    assert orjson.loads(orjson.dumps(store.query("SELECT count() FROM usage_events FINAL").rows)) == [[10]]
    consumer.close()
