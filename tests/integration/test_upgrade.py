"""Upgrading in place: topics and a store written by the release before tenant scoping, then this one.

The landed release (``LANDED``, checked out from this repository's history into a worktree)
runs its own pricing worker and store sink on fresh topics and a fresh chdb store. Then this
release's worker and sink take over the same consumer groups, changelogs and store, and
receive: copies of the old requests under new event ids (as a client retry would send them),
exact redeliveries of old events, and new requests. Every old row is kept, nothing is counted
twice, the new requests are billed once, and the spend table (restored from the old changelog)
is exact.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from infra.workers import Proc, committed_lag, kafka_env, sink_command, worker_command, worker_env
from tests.integration.test_stream_pipeline import latest, wait_for
from tests.integration.test_tenant_identity import cost, doc
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema.raw_batch import event_time_ms, partition_for
from tokenledger.store.chdb_store import ChdbStore

LANDED = "1c68536"  # the last release before tenant-scoped identities
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def landed(tmp_path: Path) -> Iterator[Path]:
    tree = tmp_path / "landed"
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{LANDED}^{{commit}}"], check=False)
    if known.returncode != 0:  # a shallow clone: the upgrade cannot be replayed from history here
        pytest.skip(f"the landed release {LANDED} is not in this clone's history (shallow clone)")
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), LANDED],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"the landed release {LANDED} must be in this clone's history: {done.stderr}"
    yield tree
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    shutil.rmtree(tree, ignore_errors=True)


def send(kafka: KafkaSettings, docs: list[dict[str, Any]]) -> None:
    producer = Producer(kafka.client_config())
    for d in docs:
        v = orjson.dumps(d)
        key = f"{d['source']}|{d['data']['request_id']}".encode()
        producer.produce(
            kafka.topics.usage_raw, v, key=key, partition=partition_for(key, 3), timestamp=event_time_ms(v)
        )
    assert producer.flush(30) == 0


def run_stage(kafka: KafkaSettings, tmp: Path, app_id: str, group: str, cwd: Path | None, tag: str) -> list[Proc]:
    env = worker_env(kafka, app_id=app_id, datadir=tmp / f"faust-{tag}", role="all")
    store = f"chdb://{tmp / 'chdb'}"
    migrated = subprocess.run(
        [sys.executable, "-m", "billing", "--store", store, "migrate"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    worker = Proc(worker_command(), env, tmp / f"worker-{tag}.log", cwd=cwd).start()
    sink = Proc(sink_command(store, group), kafka_env(kafka), tmp / f"sink-{tag}.log", cwd=cwd).start()
    return [worker, sink]


def drain(kafka: KafkaSettings, app_id: str, group: str, procs: list[Proc]) -> None:
    for g, topic in ((app_id, kafka.topics.usage_raw), (group, kafka.topics.usage_priced)):
        wait_for(
            lambda g=g, topic=topic: committed_lag(kafka, g, topic) == 0,  # type: ignore[misc]
            180,
            f"{g} to commit everything",
            alive=lambda: all(p.alive for p in procs),
        )


def test_upgrade_keeps_rows_and_counts_once(kafka: KafkaSettings, tmp_path: Path, landed: Path) -> None:
    app_id, group = f"tl-up-{uuid.uuid4().hex[:8]}", "upgrade-sink"
    old = [doc("acme", n, tokens=1000 + n) for n in range(20)]
    send(kafka, old)
    procs = run_stage(kafka, tmp_path, app_id, group, landed, "landed")
    try:
        drain(kafka, app_id, group, procs)
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0, 0], "the landed release must stop cleanly"

    retries = [{**d, "id": f"{d['id']}-retry"} for d in old[:10]]  # the same requests, new event ids
    new = [doc("acme", n, tokens=3000 + n) for n in range(20, 30)]
    send(kafka, retries + old[10:15] + new)
    procs = run_stage(kafka, tmp_path, app_id, group, None, "new")
    try:
        drain(kafka, app_id, group, procs)
    finally:
        codes = [p.stop() for p in procs]
    assert codes == [0, 0]

    store = ChdbStore(tmp_path / "chdb")
    try:
        rows = store.query("SELECT event_id, cost_nanos FROM usage_events FINAL ORDER BY event_id").rows
    finally:
        store.close()
    assert sorted(r[0] for r in rows) == sorted(d["id"] for d in old + new)
    assert sum(r[1] for r in rows) == sum(cost(d) for d in old + new)
    spend = latest(kafka, f"{app_id}-spend-changelog")[b'"acme|department=research"']["month"]
    assert sum(spend.values()) == sum(cost(d) for d in old + new)
