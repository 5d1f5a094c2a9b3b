"""Tenant-scoped identity and partitioner-independent dedup, on the real broker and chdb.

* two tenants send identical ``(source, id, request_id)``: each is billed once, in its own bill;
  both rows are in the store; each tenant's budget spend is exact;
* events published to random partitions, with copies of requests on other partitions under new
  event ids (as kafka-go's default balancer or a retry that went elsewhere would): each request
  is billed once, in the store and in real-time spend;
* a worker restoring an identity changelog written before tenant scoping (``source|request_id``)
  still refuses a copy of a request priced then;
* events outside the time window (2099, 1971) go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from billing.bill import build_bill
from billing.context import BillingContext
from billing.model import Scope
from billing.periods import month_period
from infra.workers import worker_env
from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.store_sink import StoreSink
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import Worker, latest, read_all, wait_for
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema import UsageEventV1
from tokenledger.schema.priced import priced_rows
from tokenledger.schema.raw_batch import encode_batch, event_time_ms, partition_for
from tokenledger.store.chdb_store import ChdbStore

MONTH = "2026-10"
MONTH_KEY = "2026-10-01T00:00Z"  # the spend state's key of MONTH (UTC)
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
BUDGETS = """
timezone: "UTC"
budgets:
  - {id: acme-research, tenant: acme, scope: {department: research}, period: month, limit_usd: "1000.00"}
  - {id: globex-research, tenant: globex, scope: {department: research}, period: month, limit_usd: "1000.00"}
"""


def doc(tenant: str, n: int, *, event_id: str | None = None, tokens: int = 1000) -> dict[str, Any]:
    d = event_dict(request_id=f"req-{n}", input_tokens=tokens, output_tokens=200, cached_read_tokens=0)
    d["id"] = event_id or f"evt-{n}"
    d["source"] = "//svc/go-chat"  # the README's example: guessable, shared by both tenants
    d["time"] = f"2026-10-{1 + n % 28:02d}T10:00:00Z"
    d["data"]["labels"] = {"tenant": tenant, "department": "research", "project": "chat"}
    return d


def cost(d: dict[str, Any]) -> int:
    ev = UsageEventV1.model_validate_json(orjson.dumps(d))
    return price(ev.data, ev.time, LayeredPriceTable.from_path()).total_nanos


@pytest.fixture
def worker(kafka: KafkaSettings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Worker, str]]:
    """A pricing and spend worker; budgets from the test module's ``BUDGETS`` (else this one's)."""
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(getattr(request.module, "BUDGETS", BUDGETS))
    app_id = f"tl-id-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka, app_id=app_id, datadir=tmp_path / "faust", budgets=budgets, session_timeout_s=6)
    w = Worker(env, tmp_path / "worker.log")
    yield w, app_id
    w.stop()


def sink_all(kafka: KafkaSettings, store: ChdbStore, rows: int, timeout_s: float = 120) -> None:
    consumer = ConfluentBatchConsumer(kafka, kafka.topics.usage_priced, f"sink-{uuid.uuid4().hex[:6]}")
    sink = StoreSink(store, consumer, KafkaDeadLetter(kafka), batch_size=500, batch_wait_s=0.3)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            sink.run_once()
            if int(store.query("SELECT count() FROM usage_events FINAL").scalar()) >= rows:
                break
    finally:
        consumer.close()


def assert_each_request_once(
    kafka: KafkaSettings,
    store: ChdbStore,
    w: Worker,
    truth: dict[str, int],
    rows_each: int,
    spent: Callable[[str], int],
) -> None:
    """Real-time spend, then the store: each tenant's ``rows_each`` requests once, at their exact prices."""
    wait_for(
        lambda: {t: spent(t) for t in truth} == truth,
        120,
        "real-time spend of both tenants",
        observe=lambda: ({t: spent(t) for t in truth}, truth),
        alive=lambda: w.alive,
    )
    rows = rows_each * len(truth)
    sink_all(kafka, store, rows)
    time.sleep(1)  # anything more would be a double count: let it arrive
    sink_all(kafka, store, rows + 1, timeout_s=3)
    found = store.query("SELECT tenant, count(), sum(cost_nanos) FROM usage_events FINAL GROUP BY tenant ORDER BY 1")
    assert [tuple(r) for r in found.rows] == [(t, rows_each, truth[t]) for t in sorted(truth)]


def spend(kafka: KafkaSettings, app_id: str, tenant: str, month: str | None = MONTH_KEY) -> int:
    """The tenant's research department's real-time spend in ``month`` (every month kept: ``None``)."""
    state = latest(kafka, f"{app_id}-spend-changelog").get(f'"{tenant}|department=research"'.encode())
    if not state:
        return 0
    return sum(int(v) for k, v in state["month"].items() if month is None or k == month)


def test_two_tenants_same_ids_any_partition_any_codec(
    kafka: KafkaSettings, store: ChdbStore, worker: tuple[Worker, str]
) -> None:
    w, app_id = worker
    rng = random.Random(26)
    acme = [doc("acme", n, tokens=1000 + n) for n in range(40)]
    globex = [doc("globex", n, tokens=5000 + n) for n in range(40)]  # the very same (source, id, request_id)
    wire: list[tuple[int, bytes]] = []  # (partition, value): partitions chosen at random, not by key
    for d in acme + globex:
        wire.append((rng.randrange(3), orjson.dumps(d)))
    for d in rng.sample(acme, 10) + rng.sample(globex, 10):  # copies under new event ids, elsewhere
        copy = {**d, "id": f"{d['id']}-retry-{rng.randrange(1000)}"}
        wire.append((rng.randrange(3), orjson.dumps(copy)))
    for d in rng.sample(acme, 5):  # exact redeliveries on another partition
        wire.append((rng.randrange(3), orjson.dumps(d)))
    rng.shuffle(wire)
    # Any codec an outside client may use (franz-go compresses with snappy by default).
    producers = [Producer({**kafka.client_config(), "compression.type": c}) for c in CODECS]
    i = 0
    while i < len(wire):  # alone or in batch messages of one (random) partition
        size = rng.choice((1, 1, 3, 7))
        part = wire[i : i + size]
        value = part[0][1] if size == 1 else encode_batch([v for _, v in part])
        producer = rng.choice(producers)
        producer.produce(kafka.topics.usage_raw, value, partition=part[0][0], timestamp=event_time_ms(value))
        i += size
    assert all(p.flush(30) == 0 for p in producers)
    misplaced = sum(1 for p, v in wire if p != partition_for(_key(v), 3))
    assert misplaced > 20  # the test does exercise forwarding

    w.start()
    truth = {t: sum(cost(d) for d in docs) for t, docs in (("acme", acme), ("globex", globex))}
    assert_each_request_once(kafka, store, w, truth, 40, lambda t: spend(kafka, app_id, t))
    ctx = BillingContext.default()
    for tenant in ("acme", "globex"):
        bill = build_bill(store, Scope(tenant, "department", "research"), month_period(MONTH, ctx.config.tz), ctx)
        assert (bill.summary.requests, bill.summary.cost_nanos) == (40, truth[tenant])
    priced = [row for _, v in read_all(kafka, kafka.topics.usage_priced) for row in priced_rows(v or b"")]
    assert len(priced) == 80  # each request priced once, whatever partition its copies came on
    assert {t: spend(kafka, app_id, t) for t in truth} == truth
    # Each tenant's budget over the same scope holds exactly its own tenant's spend.
    state = latest(kafka, f"{app_id}-budget-state-changelog")
    budgets = {
        json.loads(k).removeprefix("budget:"): v["status"]["spent_nanos"]
        for k, v in state.items()
        if v and json.loads(k).startswith("budget:")
    }
    assert budgets == {"acme-research": truth["acme"], "globex-research": truth["globex"]}


def _key(value: bytes) -> bytes:
    d = json.loads(value)
    return f"{d['source']}|{d['data']['request_id']}".encode()


def test_old_identity_changelog_still_refuses_copies(kafka: KafkaSettings, worker: tuple[Worker, str]) -> None:
    """An identity record written by the release before tenant scoping: ``source|request_id``."""
    w, app_id = worker
    old = doc("acme", 1)
    home = partition_for(_key(orjson.dumps(old)), 3)
    changelog = f"{app_id}-priced-batches-changelog"
    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(changelog, 3, 1, config={"cleanup.policy": "compact"})])[changelog].result(30)
    at_s = event_time_ms(orjson.dumps(old)) // 1000
    legacy = {"ids": [[f"{old['source']}|{old['data']['request_id']}", at_s, 0]]}
    producer = Producer(kafka.client_config())
    producer.produce(changelog, orjson.dumps(legacy), key=b'"%d:0"' % home, partition=home)
    # As the old release had it on the topic: the request at position 0 of its home partition...
    producer.produce(
        kafka.topics.usage_raw, orjson.dumps(old), partition=home, timestamp=event_time_ms(orjson.dumps(old))
    )
    # ...then, after the upgrade, a retry of it under a new event id and a new request.
    retry = {**old, "id": "evt-1-retry"}
    fresh = doc("acme", 2)
    for d in (retry, fresh):
        v = orjson.dumps(d)
        producer.produce(kafka.topics.usage_raw, v, partition=partition_for(_key(v), 3), timestamp=event_time_ms(v))
    assert producer.flush(30) == 0
    w.start()
    wait_for(
        lambda: spend(kafka, app_id, "acme") == cost(fresh),
        120,
        "the new request's spend",
        observe=lambda: spend(kafka, app_id, "acme"),
        alive=lambda: w.alive,
    )
    time.sleep(2)
    priced = [row.event_id for _, v in read_all(kafka, kafka.topics.usage_priced) for row in priced_rows(v or b"{}")]
    assert priced == ["evt-2"]  # the old request (and its retry) were priced before the upgrade
    assert spend(kafka, app_id, "acme") == cost(fresh)


def test_event_time_window_on_the_kafka_path(kafka: KafkaSettings, worker: tuple[Worker, str]) -> None:
    w, app_id = worker
    now_ms = int(time.time() * 1000)
    future, ancient, fine = doc("acme", 1), doc("acme", 2), doc("acme", 3)
    future["time"], ancient["time"] = "2099-01-01T00:00:00Z", "1971-01-01T00:00:00Z"
    producer = Producer(kafka.client_config())
    for d in (future, ancient):
        producer.produce(kafka.topics.usage_raw, orjson.dumps(d), key=_key(orjson.dumps(d)), timestamp=now_ms)
    v = orjson.dumps(fine)
    producer.produce(kafka.topics.usage_raw, v, key=_key(v), timestamp=event_time_ms(v) + 3_600_000)  # an hour late
    assert producer.flush(30) == 0
    w.start()
    wait_for(
        lambda: len(read_all(kafka, kafka.topics.dead_letter)) == 2, 120, "two dead letters", alive=lambda: w.alive
    )
    wait_for(lambda: spend(kafka, app_id, "acme") == cost(fine), 60, "the event inside the window")
    reasons = sorted(orjson.loads(v or b"{}")["reason"] for _, v in read_all(kafka, kafka.topics.dead_letter))
    assert reasons[0].startswith("event time more than 30 days before its record's timestamp")
    assert reasons[1].startswith("event time more than 5 minutes after its record's timestamp")
