"""A Java service publishes usage with the Apache Kafka client, keyed its own way: billed exactly.

The client is the one the broker ships (``kafka-clients`` 3.9.2, from the jars ``make install``
resolves), compiled and run here. It keys records by ``request_id`` alone, or not at all, so
Java's partitioner places them where the project's own key (``source|request_id``) would not;
its retries of a request go out under new event ids and without a key, and some records are
sent twice. Two tenants use the very same ids. Compression is the Java client's (zstd, snappy).
The store, then, holds each request once, in its own tenant, at its exact price, and real-time
spend agrees.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from infra.broker import libs_dir
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import Worker, latest
from tests.integration.test_tenant_identity import (
    assert_each_request_once,
    cost,
    worker,  # noqa: F401 - a fixture
)
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema.raw_batch import partition_for
from tokenledger.store.chdb_store import ChdbStore

JAVA_SOURCE = Path(__file__).resolve().parents[1] / "java" / "UsageProducer.java"


def doc(tenant: str, n: int, at: datetime) -> dict[str, Any]:
    d = event_dict(request_id=f"req-{n}", input_tokens=2000 + n, output_tokens=300, cached_read_tokens=0)
    d["id"] = f"evt-{n}"
    d["source"] = "//svc/java-chat"
    d["time"] = at.isoformat()
    d["data"]["labels"] = {"tenant": tenant, "department": "research", "project": "chat"}
    return d


def java_producer(tmp_path: Path) -> list[str]:
    """Compile the producer against the broker's own client jars; the command that runs it."""
    javac = shutil.which("javac")
    assert javac is not None, "javac (OpenJDK 17) is needed: the test runs a Java Kafka client"
    classes = tmp_path / "classes"
    classpath = f"{libs_dir()}/*"
    subprocess.run([javac, "-d", str(classes), "-cp", classpath, str(JAVA_SOURCE)], check=True, timeout=120)
    return ["java", "-cp", f"{classes}:{classpath}", "UsageProducer"]


def send(command: list[str], kafka: KafkaSettings, compression: str, lines: list[str], tmp_path: Path) -> list[int]:
    """Run the Java producer; the partitions its records went to."""
    path = tmp_path / f"records-{compression}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [*command, kafka.bootstrap_servers, kafka.topics.usage_raw, compression, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [int(line.split()[0]) for line in done.stdout.splitlines()]


def month_spend(kafka: KafkaSettings, app_id: str, tenant: str) -> int:
    state = latest(kafka, f"{app_id}-spend-changelog").get(f'"{tenant}|department=research"'.encode())
    return sum(int(v) for v in state["month"].values()) if state else 0


def test_a_java_producer_with_its_own_keys_is_billed_exactly(
    kafka: KafkaSettings,
    store: ChdbStore,
    worker: tuple[Worker, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    w, app_id = worker
    rng = random.Random(17)
    now = datetime.now(UTC).replace(microsecond=0)
    docs = {
        tenant: [doc(tenant, n, now - timedelta(minutes=90 - n)) for n in range(30)] for tenant in ("acme", "globex")
    }
    firsts = [f"{d['data']['request_id']}\t{orjson.dumps(d).decode()}" for ds in docs.values() for d in ds]
    retries = []
    for d in rng.sample(docs["acme"], 8) + rng.sample(docs["globex"], 8):  # a new event id, no key
        retries.append("\t" + orjson.dumps({**d, "id": f"{d['id']}-retry"}).decode())
    for d in rng.sample(docs["acme"], 4) + rng.sample(docs["globex"], 4):  # the same record again, another key
        retries.append(f"resend-{d['id']}\t{orjson.dumps(d).decode()}")
    command = java_producer(tmp_path)
    placed = send(command, kafka, "zstd", firsts, tmp_path)
    send(command, kafka, "snappy", retries, tmp_path)
    homes = [partition_for(f"{d['source']}|{d['data']['request_id']}".encode(), 3) for ds in docs.values() for d in ds]
    assert sum(p != h for p, h in zip(placed, homes, strict=True)) >= 10  # Java's placement is not the project's

    w.start()
    truth = {tenant: sum(cost(d) for d in ds) for tenant, ds in docs.items()}
    assert all(v > 0 for v in truth.values())
    assert_each_request_once(kafka, store, w, truth, 30, lambda t: month_spend(kafka, app_id, t))
