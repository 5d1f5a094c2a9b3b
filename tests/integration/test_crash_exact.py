"""Crashes while events are in flight, on Apache Kafka: the store, the spend tables, the breakers
and the thresholds all equal an independently computed ground truth, to the nano.

Every run publishes ~660 raw events at a steady pace (600 requests of two tenants, 10 %
redelivered) through the commands a user runs (pricing worker, spend worker, store sink), and
at a random moment of the publishing:

* ``kill-pricing`` / ``kill-spend``: SIGKILL of that worker (offsets uncommitted, batches half
  written), restarted after a random pause;
* ``two-workers-per-agent-one-killed``: two pricing and two spend workers share the
  partitions; one pricing (or spend) worker is killed and never comes back, the other of its
  role takes its partitions over;
* ``broker-sigterm`` / ``broker-kill9``: the Kafka broker itself stops (cleanly, or SIGKILL of
  the JVM) and restarts on its data directory.

Run one case many times with ``TOKENLEDGER_CRASH_SEED``-varied kill points:
``for i in $(seq 5); do pytest tests/integration/test_crash_exact.py; done``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from infra.broker import KafkaBroker, free_port
from infra.topics import SIMULATION_RETENTION_MS, create_topics
from infra.workers import Proc, committed_lag, committed_offsets, kafka_env, sink_command, worker_command, worker_env
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import latest, read_messages, wait_for
from tokenledger.budget_eval import level_thresholds, matches
from tokenledger.budgets import BudgetFile
from tokenledger.kafka_config import KafkaSettings, Topics
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema.deltas import BUDGET_PREFIX, SpendDeltaV1, decode_deltas
from tokenledger.schema.raw_batch import encode_batch, event_time_ms, is_batch, partition_for, split_batch
from tokenledger.schema.v1 import UsageEventV1
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate

BUDGETS = """
timezone: "UTC"
budgets:
  - {id: acme-month, tenant: acme, period: month, limit_usd: "9", publish_step: "0.000000001"}
  - {id: acme-research-month, tenant: acme, scope: {department: research}, period: month, limit_usd: "3",
     publish_step: "0.000000001"}
  - {id: globex-eng-day, tenant: globex, scope: {department: engineering}, period: day, limit_usd: "2",
     publish_step: "0.000000001"}
  - {id: acme-u1-month, tenant: acme, scope: {user_id: u1}, period: month, limit_usd: "0.8",
     publish_step: "0.000000001"}
"""
MONTH = "2026-10-01T00:00Z"
DIMS = {"tenant": "tenant", "user": "user", "department": "department", "project": "project", "feature": "feature"}
REQUESTS = 600
RATE_PER_S = 80.0


def make_events(rng: random.Random, one_tenant: bool = False) -> list[tuple[bytes, dict[str, Any]]]:
    """600 requests (two tenants, or only acme), each published once, 10 % a second time later on."""
    start = datetime(2026, 10, 10, 8, tzinfo=UTC)
    events: list[tuple[bytes, dict[str, Any]]] = []
    for n in range(REQUESTS):
        tenant = "acme" if n % 3 or one_tenant else "globex"
        labels = {
            "tenant": tenant,
            "user": f"u{rng.randrange(6)}",
            "department": rng.choice(["research", "engineering", "legal"]),
            "project": f"p{rng.randrange(3)}",
            "feature": "chat",
            "environment": "prod",
            "api_key": "key-1",
        }
        doc = event_dict(
            request_id=f"req-{n}",
            input_tokens=rng.randrange(2_000, 20_000),
            output_tokens=rng.randrange(100, 3_000),
            cached_read_tokens=0,
            labels=labels,
        )
        doc["id"] = f"evt-{n}"
        doc["time"] = (start + timedelta(seconds=20 * n)).isoformat().replace("+00:00", "Z")
        events.append((f"{doc['source']}|req-{n}".encode(), doc))
    redelivered = [events[i] for i in rng.sample(range(REQUESTS), REQUESTS // 10)]
    for ev in redelivered:
        events.insert(rng.randrange(events.index(ev) + 1, len(events) + 1), ev)
    return events


@dataclass
class Truth:
    """What every counter must show, computed from the published requests alone."""

    nanos: dict[str, int] = field(default_factory=dict)  # request identity -> cost

    @classmethod
    def of(cls, events: list[tuple[bytes, dict[str, Any]]]) -> Truth:
        table = LayeredPriceTable.from_path()
        truth = cls()
        for _, doc in events:
            ev = UsageEventV1.model_validate_json(orjson.dumps(doc))
            truth.nanos[f"{ev.source}|{ev.id}"] = price(ev.data, ev.time, table).total_nanos
        return truth

    def by_dimension(self, docs: dict[str, dict[str, Any]]) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for identity, nanos in self.nanos.items():
            labels = docs[identity]["data"]["labels"]
            for dim, label in DIMS.items():
                out[f"{labels['tenant']}|{dim}={labels[label]}"] += nanos
            out[f"{labels['tenant']}|model={docs[identity]['data']['model']}"] += nanos
            out[f"{labels['tenant']}|api_key={labels['api_key']}"] += nanos
        return dict(out)


class Rig:
    """Topics, budgets, the three processes and the checks of one run."""

    def __init__(self, broker: KafkaBroker, tmp: Path, workers: int = 1) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.tmp = tmp
        self.settings = KafkaSettings(
            bootstrap_servers=broker.bootstrap,
            topics=Topics(**{k: f"{v}-{suffix}" for k, v in Topics().__dict__.items()}),
        )
        create_topics(self.settings, partitions=3, retention_ms=SIMULATION_RETENTION_MS)
        self.budgets_path = tmp / "budgets.yaml"
        self.budgets_path.write_text(BUDGETS)
        self.app_id = f"tl-crash-{suffix}"
        store_dir = tmp / "chdb"
        store = ChdbStore(store_dir)
        migrate(store)
        store.close()  # the sink process owns the embedded store while it runs
        self.store_dir = store_dir

        def worker(role: str, n: int) -> Proc:
            env = worker_env(
                self.settings,
                app_id=self.app_id,
                datadir=tmp / f"faust-{role}-{n}",
                role=role,
                budgets=self.budgets_path,
                session_timeout_s=6,
            )
            return Proc(worker_command(), env, tmp / f"{role}-{n}.log")

        self.pricing = [worker("pricing", n) for n in range(workers)]
        self.spend = [worker("spend", n) for n in range(workers)]
        self.sink = Proc(
            sink_command(f"chdb://{store_dir}", f"sink-{suffix}", batch_size=500, batch_wait_s=0.2),
            {**kafka_env(self.settings), "TOKENLEDGER_RDKAFKA_DEBUG": "cgrp"},  # group/commit trail for a failure
            tmp / "sink.log",
        )
        self.sink_group = f"sink-{suffix}"

    def processes(self) -> list[Proc]:
        return [*self.pricing, *self.spend, self.sink]

    def start(self) -> None:
        """Start every process and wait until each worker finished its recovery (``Worker ready``)."""
        for p in self.processes():
            p.start()
        for worker in [*self.pricing, *self.spend]:
            worker.wait_log("Worker ready")

    def publish(
        self, events: list[tuple[bytes, dict[str, Any]]], during: Callable[[int], None], rng: random.Random
    ) -> None:
        """Publish at ``RATE_PER_S``; ``during(i)`` is called before the i-th event.

        As services do: about half the events alone (keyed by request), the others in batch
        messages of 2-12 events of one partition (``tokenledger.schema.raw_batch``), so a kill
        lands inside batches too. One single event in six goes to a random partition, as a
        client with another partitioner sends it: the pricing stage forwards it home, so kills
        land between a forward and its pricing too.
        """
        producer = Producer({**self.settings.client_config(), "partitioner": "murmur2_random"})
        topic = self.settings.topics.usage_raw
        pending: dict[int, list[bytes]] = defaultdict(list)
        t0 = time.monotonic()
        for i, (key, doc) in enumerate(events):
            during(i)
            if rng.random() < 0.5:
                value = orjson.dumps(doc)
                anywhere = rng.randrange(3) if rng.random() < 1 / 6 else -1  # -1: the key's partition
                producer.produce(topic, value, key=key, partition=anywhere, timestamp=event_time_ms(value))
            else:
                p = partition_for(key, 3)
                pending[p].append(orjson.dumps(doc))
                if len(pending[p]) >= rng.randrange(2, 13):
                    value = encode_batch(pending.pop(p))
                    producer.produce(topic, value, partition=p, timestamp=event_time_ms(value))
            producer.poll(0)
            pause = t0 + (i + 1) / RATE_PER_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        for p, values in pending.items():
            value = encode_batch(values)
            producer.produce(topic, value, partition=p, timestamp=event_time_ms(value))
        assert producer.flush(120) == 0

    def wait_drained(self, timeout: float = 240.0) -> None:
        t = self.settings.topics
        groups = [
            (f"{self.app_id}-pricing", t.usage_raw),
            (f"{self.app_id}-spend", t.spend_deltas),
            (self.sink_group, t.usage_priced),
        ]
        survivors = [p for p in self.processes() if p.alive]  # a worker killed for good stays dead
        try:
            wait_for(
                lambda: all(committed_lag(self.settings, g, topic) == 0 for g, topic in groups),
                timeout,
                "every stage to commit every offset",
                lambda: {g: committed_lag(self.settings, g, topic) for g, topic in groups},
                alive=lambda: all(p.alive for p in survivors),
            )
        except AssertionError:
            for p in self.processes():  # CI keeps only this output: where each process is, what it last said
                p.dump_stacks()
            time.sleep(2)
            for p in self.processes():
                print(f"--- {p.log.name} (alive {p.alive})\n{p.tail(60)}", file=sys.stderr)
            raise

    def stop(self) -> None:
        for p in self.processes():
            p.stop()

    def verify(self, events: list[tuple[bytes, dict[str, Any]]]) -> None:
        truth = Truth.of(events)
        docs = {f"{d['source']}|{d['id']}": d for _, d in events}
        # The store (the sink has stopped: the embedded store is ours again).
        assert self.sink.stop() == 0, "the sink must stop cleanly on SIGTERM"
        store = ChdbStore(self.store_dir)
        try:
            rows, stored = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
            ids = {f"{s}|{i}" for s, i in store.query("SELECT DISTINCT source, event_id FROM usage_events").rows}
        finally:
            store.close()
        assert (rows, stored) == (len(truth.nanos), sum(truth.nanos.values())), self._where_lost(truth, ids)
        # The spend agent's table, per dimension value, for the month.
        changelog = latest(self.settings, f"{self.app_id}-spend-spend-changelog")
        spend = {json.loads(k): v["month"].get(MONTH, 0) for k, v in changelog.items() if v}
        assert spend == truth.by_dimension(docs)
        self._verify_budgets(truth, docs)

    def _where_lost(self, truth: Truth, stored: set[str]) -> str:
        """Which stage lost the missing events: their raw positions, and whether they were ever priced."""
        raw: dict[str, tuple[int, int, int]] = {}
        for m in read_messages(self.settings, self.settings.topics.usage_raw):
            value = m.value() or b""
            for index, part in enumerate(split_batch(value) if is_batch(value) else [value]):
                doc = orjson.loads(part)
                raw.setdefault(f"{doc['source']}|{doc['id']}", (m.partition(), m.offset(), index))
        priced = {
            "{source}|{id}".format(**orjson.loads(m.value())["event"])
            for m in read_messages(self.settings, self.settings.topics.usage_priced)
        }
        missing = sorted(set(truth.nanos) - stored, key=lambda i: raw.get(i, (-1, -1, -1)))
        never_priced = [raw.get(i) for i in missing if i not in priced]
        return (
            f"{len(missing)} events missing from the store; {len(never_priced)} of them never reached "
            f"usage-priced; raw (partition, offset, index) of those: {never_priced[:12]}...{never_priced[-3:]}"
        )

    def _verify_budgets(self, truth: Truth, docs: dict[str, dict[str, Any]]) -> None:
        budgets = BudgetFile.load(self.budgets_path).budgets
        expected_spend: dict[str, int] = {}
        for b in budgets:
            expected_spend[b.id] = 0
            for identity, nanos in truth.nanos.items():
                d = docs[identity]["data"]
                if matches(b, d["labels"]["tenant"], {**d["labels"], "model": d["model"]}, d["model"]):
                    expected_spend[b.id] += nanos
        # Crossings follow the order of each budget's delta entries (one spend-deltas partition
        # per budget); an entry at or below the raw offset already folded from its partition is
        # a replay and counts once.
        deltas: dict[str, list[SpendDeltaV1]] = defaultdict(list)
        for m in read_messages(self.settings, self.settings.topics.spend_deltas):
            for delta in decode_deltas(m.value()):  # one partition's keys of a batch in a message
                if delta.key.startswith(BUDGET_PREFIX):
                    deltas[delta.key.removeprefix(BUDGET_PREFIX)].append(delta)
        expected_crossings: dict[str, int] = {}
        for b in budgets:
            running, applied = 0, defaultdict[int, int](lambda: -1)
            for delta in deltas[b.id]:
                for partition, offset, _, nanos in delta.entries:
                    if offset <= applied[partition]:
                        continue
                    applied[partition] = offset
                    before, running = running, running + nanos
                    for level, threshold in level_thresholds(b).items():
                        if before < threshold <= running:
                            expected_crossings[f"{b.id}|{level}"] = running
            assert running == expected_spend[b.id], (
                f"{b.id}: the deltas hold {running}, the requests {expected_spend[b.id]}"
            )
        seen: dict[str, set[int]] = defaultdict(set)
        for m in read_messages(self.settings, self.settings.topics.thresholds):
            c = orjson.loads(m.value())
            assert m.key() == f"{c['budget_id']}|{c['period_key']}|{c['level']}".encode()
            seen[f"{c['budget_id']}|{c['level']}"].add(c["spent_nanos"])
        # A replayed crossing repeats its key with the same content; none is missing or different.
        assert {k: sorted(v) for k, v in seen.items()} == {k: [v] for k, v in expected_crossings.items()}
        breakers = latest(self.settings, self.settings.topics.breakers)
        assert {k.decode(): v["spent_nanos"] for k, v in breakers.items()} == expected_spend
        state = latest(self.settings, f"{self.app_id}-spend-budget-state-changelog")
        assert {
            json.loads(k).removeprefix("budget:"): v["status"]["spent_nanos"]
            for k, v in state.items()
            if json.loads(k).startswith("budget:") and v["status"]
        } == {k: v for k, v in expected_spend.items() if v}  # a budget without traffic has no status


def spend_entries_in(port: int) -> float:
    """``tokenledger_delta_entries_total{outcome="in",stage="spend"}`` of the worker serving metrics on ``port``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith('tokenledger_delta_entries_total{outcome="in",stage="spend"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("TOKENLEDGER_CRASH_SEED", str(random.SystemRandom().randrange(10**6))))
    print(f"crash seed {seed}")
    return random.Random(seed)


def _run(rig: Rig, rng: random.Random, fault: Callable[[], None]) -> None:
    events = make_events(rng)
    kill_at = rng.randrange(len(events) // 5, 4 * len(events) // 5)
    rig.start()
    try:
        rig.publish(events, lambda i: fault() if i == kill_at else None, rng)
        rig.wait_drained()
        rig.verify(events)
    finally:
        rig.stop()


@pytest.mark.parametrize("role", ["pricing", "spend"])
def test_kill9_worker_while_events_are_in_flight(
    broker: KafkaBroker, tmp_path: Path, rng: random.Random, role: str
) -> None:
    rig = Rig(broker, tmp_path)
    victim = rig.pricing[0] if role == "pricing" else rig.spend[0]

    def crash() -> None:
        victim.kill9()
        time.sleep(rng.uniform(0.0, 2.0))
        victim.start()

    _run(rig, rng, crash)


@pytest.mark.parametrize("role", ["pricing", "spend"])
def test_two_workers_per_agent_one_killed_partitions_move(
    broker: KafkaBroker, tmp_path: Path, rng: random.Random, role: str
) -> None:
    rig = Rig(broker, tmp_path, workers=2)
    victim = (rig.pricing if role == "pricing" else rig.spend)[rng.randrange(2)]
    _run(rig, rng, victim.kill9)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_broker_restart_during_load(own_broker: KafkaBroker, tmp_path: Path, rng: random.Random, how: str) -> None:
    rig = Rig(own_broker, tmp_path)

    def restart() -> None:
        own_broker.stop() if how == "sigterm" else own_broker.kill()
        own_broker.start()

    _run(rig, rng, restart)


def test_one_tenant_spreads_over_two_spend_workers(broker: KafkaBroker, tmp_path: Path, rng: random.Random) -> None:
    """All traffic from one tenant: its keys and budgets spread over the 3 partitions of
    spend-deltas, both spend workers fold a share, totals are exact and each threshold is sent once."""
    rig = Rig(broker, tmp_path, workers=2)
    ports = [free_port() for _ in rig.spend]
    for worker, port in zip(rig.spend, ports, strict=True):
        worker.env["TOKENLEDGER_METRICS_PORT"] = str(port)
    events = make_events(rng, one_tenant=True)
    rig.start()
    try:
        rig.publish(events, lambda i: None, rng)
        rig.wait_drained()
        folded_here = [spend_entries_in(port) for port in ports]
        assert all(n > 0 for n in folded_here), folded_here  # both spend workers folded entries
        t = rig.settings.topics
        folded = committed_offsets(rig.settings, f"{rig.app_id}-spend", t.spend_deltas)
        assert sorted(folded) == [0, 1, 2] and all(folded.values()), folded  # each partition was worked on
        rig.verify(events)
        thresholds = [m.key() for m in read_messages(rig.settings, t.thresholds)]
        assert thresholds and len(thresholds) == len(set(thresholds))  # each crossing once: no replay here
    finally:
        rig.stop()
