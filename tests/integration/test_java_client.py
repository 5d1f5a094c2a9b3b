"""Java services on the Apache Kafka client: one publishes usage keyed its own way, one follows breakers.

The client is the one the broker ships (``kafka-clients`` 3.9.2, from the jars ``make install``
resolves), compiled and run here. It keys records by ``request_id`` alone, or not at all, so
Java's partitioner places them where the project's own key (``source|request_id``) would not;
its retries of a request go out under new event ids and without a key, and some records are
sent twice. Two tenants use the very same ids. Compression is the Java client's (zstd, snappy).
The store, then, holds each request once, in its own tenant, at its exact price, and real-time
spend agrees. A gateway's breaker feed written the same way (``tests/java/BreakerFeed.java``,
the README's recipe: every partition from the beginning to its end offset, the latest value per
budget, a null value withdraws it) sees what the project's own client sees: one tenant's
budget broken at its exact spend, the other's untouched.
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
from tests.integration.test_stream_pipeline import Worker, latest, wait_for
from tests.integration.test_tenant_identity import (
    assert_each_request_once,
    cost,
    spend,
    worker,  # noqa: F401 - a fixture
)
from tests.readme import block
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema.raw_batch import partition_for
from tokenledger.store.chdb_store import ChdbStore

JAVA = Path(__file__).resolve().parents[1] / "java"
BUDGETS = """
timezone: "UTC"
budgets:
  - {id: acme-research, tenant: acme, scope: {department: research}, period: month, limit_usd: "0.10"}
  - {id: globex-research, tenant: globex, scope: {department: research}, period: month, limit_usd: "1000.00"}
"""


def doc(tenant: str, n: int, at: datetime) -> dict[str, Any]:
    d = event_dict(request_id=f"req-{n}", input_tokens=2000 + n, output_tokens=300, cached_read_tokens=0)
    d["id"] = f"evt-{n}"
    d["source"] = "//svc/java-chat"
    d["time"] = at.isoformat()
    d["data"]["labels"] = {"tenant": tenant, "department": "research", "project": "chat"}
    return d


def java(tmp_path: Path, program: str) -> list[str]:
    """Compile ``tests/java/<program>.java`` against the broker's own client jars; the command that runs it."""
    javac = shutil.which("javac")
    assert javac is not None, "javac (OpenJDK 17) is needed: the test runs Java Kafka clients"
    classes = tmp_path / "classes"
    classpath = f"{libs_dir()}/*"
    subprocess.run(
        [javac, "-d", str(classes), "-cp", classpath, str(JAVA / f"{program}.java")], check=True, timeout=120
    )
    return ["java", "-cp", f"{classes}:{classpath}", program]


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


def test_java_clients_publish_usage_and_follow_breakers(
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
    command = java(tmp_path, "UsageProducer")
    placed = send(command, kafka, "zstd", firsts, tmp_path)
    send(command, kafka, "snappy", retries, tmp_path)
    homes = [partition_for(f"{d['source']}|{d['data']['request_id']}".encode(), 3) for ds in docs.values() for d in ds]
    assert sum(p != h for p, h in zip(placed, homes, strict=True)) >= 10  # Java's placement is not the project's

    w.start()
    truth = {tenant: sum(cost(d) for d in ds) for tenant, ds in docs.items()}
    assert all(v > 0 for v in truth.values())
    assert_each_request_once(kafka, store, w, truth, 30, lambda t: spend(kafka, app_id, t, month=None))

    def breakers() -> dict[str, Any]:
        return {k.decode(): v for k, v in latest(kafka, kafka.topics.breakers).items() if v is not None}

    # Each request moves the spend by more than the 1 % publish step: the last breaker carries it all.
    wait_for(lambda: breakers().get("acme-research", {}).get("spent_nanos") == truth["acme"], 60, "acme's breaker")
    ours = breakers()
    assert ours["acme-research"]["state"] == "broken" and ours["acme-research"]["remaining_nanos"] == 0
    assert ours["globex-research"]["state"] == "normal"
    feed = subprocess.run(
        [*java(tmp_path, "BreakerFeed"), kafka.bootstrap_servers, kafka.topics.breakers],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert feed.returncode == 0, feed.stderr[-2000:]
    theirs = {
        budget: orjson.loads(value) for budget, _, value in (line.partition("\t") for line in feed.stdout.splitlines())
    }
    assert theirs == ours
    readme = orjson.loads(block('"budget_id"', "json"))  # the README's record has the fields a gateway gets
    assert list(readme) == list(ours["acme-research"]) and readme["state"] == "broken"
