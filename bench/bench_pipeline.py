"""Pipeline throughput end to end vs a plain-Python loop, measured in one run.

End to end: ``UsagePublisher`` -> Apache Kafka 3.9 -> pricing agent (Faust process) ->
``usage-priced`` -> spend agent (Faust process: windows, budgets, breakers) and the store sink
(``python -m stream_jobs sink`` process) -> chdb. After a warm-up of 20,000 events through the
whole pipeline (the broker's JIT compiles its hot paths in the first seconds of load: a running
cluster is warm), timed from the first publish until the spend
agent and the sink have committed every priced event (the sink commits only after the store
acknowledged the insert); the store is then checked to hold every request. Each process's CPU
seconds are read from ``/proc``, so events per CPU-second ("per core") are reported too.

Plain loop, same events, same machine: ``json.loads`` + pydantic validation + ``price()``
+ the same per-dimension day/month/hour folds, in one Python loop, nothing else; measured before and
after the pipeline, the faster of the two is the yardstick for the ratio.

Run: ``.venv/bin/python -m bench.bench_pipeline [events]``. Not a timed test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from infra.broker import start_broker
from infra.topics import SIMULATION_RETENTION_MS, create_topics
from infra.workers import Proc, kafka_env, latest_values, sink_command, worker_command, worker_env
from producers.publisher import UsagePublisher
from stream_jobs.spend_state import DIMENSIONS, When, add_spend, state_key
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, price
from tokenledger.sample import simulate
from tokenledger.schema import UsageEventV1
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate

TZ = ZoneInfo("Asia/Shanghai")
APP = "tl-bench"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """Per thread of a process: its name (digits folded to N) and CPU seconds so far (Linux ``/proc``)."""
    out: dict[str, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended
        name = "".join("N" if c.isdigit() else c for c in stat[stat.index("(") + 1 : stat.rindex(")")])
        fields = stat.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def thread_cpu_delta(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per thread name between two :func:`thread_cpu` readings."""
    out: defaultdict[str, float] = defaultdict(float)
    for tid, (name, cpu) in after.items():
        out[name] += cpu - before.get(tid, (name, 0.0))[1]
    return dict(out)


def events(n: int) -> list[dict[str, Any]]:
    """``n`` simulated requests from November on, scaled so they span about a month."""
    out = []
    for raw in simulate(datetime(2026, 11, 1, tzinfo=TZ), 365, scale=max(1.0, n / 15_000)):
        out.append(raw)
        if len(out) == n:
            break
    return out


def truth_of(raws: list[bytes], table: CachedPriceTable) -> tuple[int, dict[tuple[str, str], int]]:
    """Ground truth: total cost and cost per (tenant, month key in the budget timezone), nano-USD."""
    total, by_month = 0, defaultdict[tuple[str, str], int](int)
    seen: set[str] = set()
    for raw in raws:
        ev = UsageEventV1.model_validate_json(raw)
        identity = f"{ev.source}|{ev.data.request_id}"
        if identity in seen or not ev.data.final:
            continue
        seen.add(identity)
        nanos = price(ev.data, ev.time, table).total_nanos
        total += nanos
        by_month[(ev.data.labels.tenant, When.of(ev.time, TZ).month)] += nanos
    return total, dict(by_month)


def plain_loop(raws: list[bytes], table: CachedPriceTable) -> float:
    """Decode + validate + price + fold, events/s."""
    state: dict[str, Any] = {}
    t0 = time.perf_counter()
    for raw in raws:
        ev = UsageEventV1.model_validate_json(raw)
        nanos = price(ev.data, ev.time, table).total_nanos
        when = When.of(ev.time, TZ)
        lb = ev.data.labels
        labels = {
            "tenant": lb.tenant,
            "user": lb.user,
            "department": lb.department,
            "project": lb.project,
            "model": ev.data.model,
            "feature": lb.feature,
            "api_key": lb.api_key,
        }
        for dim in DIMENSIONS:
            value = labels[dim]
            if value:
                key = state_key(lb.tenant, dim, value)
                state[key] = add_spend(state.get(key), when, nanos)
    return len(raws) / (time.perf_counter() - t0)


@dataclass
class Run:
    """What one end-to-end run measured."""

    published_s: float
    stored_s: float
    budgets_s: float
    cpu_s: dict[str, float]  # per process, over the run
    rows: int
    stored_nanos: int
    tenant_months: dict[tuple[str, str], int]  # from the spend table's changelog
    delta_messages: int  # on spend-deltas: what the spend stage consumed
    raw_messages: int  # on usage-raw: the publisher's batches
    topics: dict[str, tuple[int, int]]  # every topic's messages and bytes on disk
    broker_threads: dict[str, float]  # the broker's CPU seconds per thread name over the run


def topic_sizes(settings: KafkaSettings, log_dir: Path) -> dict[str, tuple[int, int]]:
    """Messages (end offsets) and bytes on disk of every topic, changelogs included."""
    admin_reader = Consumer({**settings.client_config(), "group.id": "bench-sizes", "enable.auto.commit": False})
    out: dict[str, tuple[int, int]] = {}
    try:
        for topic, meta in admin_reader.list_topics(timeout=10).topics.items():
            if topic.startswith("__"):
                continue
            ends = sum(
                admin_reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions
            )
            size = sum(f.stat().st_size for d in log_dir.glob(f"{topic}-*") for f in d.glob("*.log"))
            out[topic] = (ends, size)
    finally:
        admin_reader.close()
    return out


class Offsets:
    """Committed and end offsets of consumer groups, read through one client per group for the whole run.

    A fresh client per reading (five a second) made the broker answer ~15 connection handshakes
    a second, counted in its CPU per event. A reading is two requests: the end offsets of every
    partition in one ``ListOffsets`` (``offsets_for_times`` at "latest"), the committed ones in
    one ``OffsetFetch``; a watermark request per partition (12) cost the broker 2.5-5 % of a
    core while polling (measured against an idle broker), ~2 µs per event of a run.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._clients: dict[str, Consumer] = {}
        self._parts: dict[str, list[TopicPartition]] = {}

    def committed_and_end(self, group: str, topic: str) -> tuple[int, int]:
        """Offsets of ``topic`` committed by ``group``, and its end offsets, each summed."""
        c = self._clients.get(group)
        if c is None:
            config = {**self._settings.client_config(), "group.id": group, "enable.auto.commit": False}
            c = self._clients[group] = Consumer(config)
        parts = self._parts.get(topic)
        if parts is None:
            parts = self._parts[topic] = [
                TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10).topics[topic].partitions
            ]
        latest = [TopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in parts]
        ends = sum(tp.offset for tp in c.offsets_for_times(latest, timeout=10))
        done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
        return done, ends

    def close(self) -> None:
        """Close every client (before the broker stops)."""
        for c in self._clients.values():
            c.close()
        self._clients.clear()


def read_latest(settings: KafkaSettings, topic: str) -> dict[bytes, Any]:
    """The last value per key of a (compacted) topic."""
    return latest_values(settings, topic)


def wait_done(
    settings: KafkaSettings, offsets: Offsets, procs: list[Proc], t0: float, *, tmp: str, raw_messages: int
) -> dict[str, float]:
    """Seconds from ``t0`` until the spend stage and the sink committed everything (after all was priced)."""
    deadline = time.monotonic() + 1800
    stages = [(f"{APP}-spend", settings.topics.spend_deltas), ("bench-sink", settings.topics.usage_priced)]
    done_at: dict[str, float] = {}
    priced = False
    while len(done_at) < len(stages):
        if time.monotonic() > deadline or not all(p.alive for p in procs):
            raise SystemExit(f"a process exited or 1800 s passed: see {tmp}/*.log")
        if not priced:  # the spend stage is done once every raw event is priced and its deltas folded
            done, ends = offsets.committed_and_end(f"{APP}-pricing", settings.topics.usage_raw)
            priced = done == ends >= raw_messages
        for group, topic in stages:
            done, ends = offsets.committed_and_end(group, topic)
            # Once every raw event is priced, the priced and delta topics are complete: a stage is
            # done when it committed their ends (priced events travel ~2,000 to a message).
            if priced and group not in done_at and done == ends >= 1:
                done_at[group] = time.perf_counter() - t0
        time.sleep(0.2)
    return done_at


WARM_UP = 20_000  # events through the whole pipeline before the clock starts (JIT, caches, connections)


def publish(settings: KafkaSettings, raws: list[bytes], docs: list[dict[str, Any]]) -> None:
    """Publish events keyed by request, as services do, and wait until the broker has them."""
    publisher = UsagePublisher(settings, spool=None, record_time="event")
    for raw, doc in zip(raws, docs, strict=True):
        publisher.publish_raw(f"{doc['source']}|{doc['data']['request_id']}".encode(), raw)
    publisher.flush()
    publisher.close()  # before the broker stops, or its client logs connection failures at exit


def run_pipeline(raws: list[bytes], docs: list[dict[str, Any]], tmp: str, warm: int) -> Run:
    """Publish every event through the real pipeline and wait until the store and the budgets hold them.

    The first ``warm`` events warm the pipeline up (the broker's JIT compiles its hot paths in
    the first seconds of load, ~1 CPU-second); the clock and the CPU counters cover the rest.
    """
    broker = start_broker(Path(tmp) / "kafka")
    store = ChdbStore(Path(tmp) / "chdb")
    migrate(store)
    store.close()  # the sink process owns it while it runs
    # The codec from the environment, as the workers take it: TOKENLEDGER_KAFKA_COMPRESSION=none compares.
    settings = replace(KafkaSettings.from_env(), bootstrap_servers=broker.bootstrap)
    create_topics(settings, retention_ms=SIMULATION_RETENTION_MS)  # a simulated year: records stamped then
    procs = [
        Proc(
            worker_command("warn"),
            worker_env(settings, app_id=APP, datadir=Path(tmp) / f"faust-{role}", role=role),
            Path(tmp) / f"{role}.log",
        ).start()
        for role in ("pricing", "spend")
    ]
    sink = sink_command(f"chdb://{tmp}/chdb", "bench-sink")  # the sink's defaults, as an operator runs it
    procs.append(Proc(sink, kafka_env(settings), Path(tmp) / "sink.log").start())
    pids = {name: p.proc.pid if p.proc else 0 for name, p in zip(("pricing", "spend", "sink"), procs, strict=True)}
    pids["broker"] = broker.pid or 0
    time.sleep(15)  # every process joined its group and idles
    idle0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(5)
    idle1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    idle = ", ".join(f"{name} {100 * (idle1[name] - idle0[name]) / 5:.1f} %" for name in pids)
    print(f"idle CPU over 5 s (% of a core): {idle}; record batches compressed with {settings.compression}", flush=True)
    t0 = time.perf_counter()
    publish(settings, raws[:warm], docs[:warm])
    offsets = Offsets(settings)
    warm_messages = offsets.committed_and_end(f"{APP}-pricing", settings.topics.usage_raw)[1]
    wait_done(settings, offsets, procs, t0, tmp=tmp, raw_messages=warm_messages)
    print(f"warmed up with {warm:,} events in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"publishing {len(raws) - warm:,} events", flush=True)
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    broker0 = thread_cpu(pids["broker"])
    own0 = time.process_time()
    t0 = time.perf_counter()
    publish(settings, raws[warm:], docs[warm:])
    published_s = time.perf_counter() - t0
    cpu = {"publisher": time.process_time() - own0}
    raw_messages = offsets.committed_and_end(f"{APP}-pricing", settings.topics.usage_raw)[1]
    done_at = wait_done(settings, offsets, procs, t0, tmp=tmp, raw_messages=raw_messages)
    cpu |= {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    broker_threads = thread_cpu_delta(broker0, thread_cpu(pids["broker"]))
    for p in procs:
        p.stop()
    months: dict[tuple[str, str], int] = {}
    for raw_key, state in read_latest(settings, f"{APP}-spend-spend-changelog").items():
        tenant, _, dim = json.loads(raw_key).partition("|")
        if state and dim == f"tenant={tenant}":
            months |= {(tenant, month): v for month, v in state["month"].items()}
    deltas = offsets.committed_and_end(f"{APP}-spend", settings.topics.spend_deltas)[1]
    offsets.close()
    topics = topic_sizes(settings, broker.data_dir / "logs")
    store = ChdbStore(Path(tmp) / "chdb")
    rows, stored = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
    store.close()
    broker.stop()
    spend_s = done_at[f"{APP}-spend"]
    return Run(
        published_s,
        done_at["bench-sink"],
        spend_s,
        cpu,
        int(rows),
        int(stored),
        months,
        deltas,
        raw_messages - warm_messages,
        topics,
        broker_threads,
    )


def main() -> None:
    """Run both, check the totals against the ground truth, print the rates (headline last)."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    table = CachedPriceTable(LayeredPriceTable.from_path())
    docs = events(WARM_UP + n)
    if len(docs) < WARM_UP + n:
        raise SystemExit(f"the simulation yields {len(docs):,} events, fewer than {WARM_UP + n:,}")
    raws = [json.dumps(d).encode() for d in docs]
    before = plain_loop(raws[WARM_UP:], table)
    print(f"plain loop (decode + validate + price + 7 dimension folds): {before:,.0f} events/s", flush=True)
    truth_total, truth_months = truth_of(raws, table)
    with tempfile.TemporaryDirectory() as tmp:
        run = run_pipeline(raws, docs, tmp, WARM_UP)
    after = plain_loop(raws[WARM_UP:], table)
    # The machine's speed drifts by up to 1.5x within minutes here: the faster of the two loops
    # (before and after the pipeline) is the yardstick, which never flatters the ratio.
    plain = max(before, after)
    print(f"plain loop again after the pipeline: {after:,.0f} events/s; the faster, {plain:,.0f}, is the yardstick")
    if (run.rows, run.stored_nanos) != (len(raws), truth_total):
        raise SystemExit(
            f"store: {run.rows:,} requests, {run.stored_nanos:,} nano-USD; expected {len(raws):,}, {truth_total:,}"
        )
    wrong = {k: (v, truth_months.get(k)) for k, v in run.tenant_months.items() if truth_months.get(k) != v}
    if wrong or not run.tenant_months:
        raise SystemExit(f"spend table per tenant and month differs from the truth (found, expected): {wrong}")
    months = len(run.tenant_months)
    print(
        f"totals exact (warm-up included): store {run.stored_nanos:,} nano-USD in {run.rows:,} requests; "
        f"{months} tenant months"
    )
    all_cpu = sum(run.cpu_s.values())
    per = ", ".join(f"{name} {1e6 * c / n:,.0f}" for name, c in run.cpu_s.items())
    print(f"CPU µs/event: {per}; all processes {1e6 * all_cpu / n:,.0f} ({n / all_cpu:,.0f} events per CPU-second)")
    jit = sum(c for name, c in run.broker_threads.items() if "Compiler" in name)
    requests = sum(c for name, c in run.broker_threads.items() if name.startswith("data-plane"))
    print(
        f"broker CPU µs/event by thread: request and network threads {1e6 * requests / n:,.0f}, "
        f"JIT compiler {1e6 * jit / n:,.0f}, other {1e6 * (run.cpu_s['broker'] - requests - jit) / n:,.0f}"
    )
    print(
        f"usage-raw: {run.raw_messages:,} messages (the publisher's batches); "
        f"spend-deltas: {run.delta_messages:,} (warm-up included)"
    )
    sizes = ", ".join(f"{t} {m:,} ({b / 1e6:,.1f} MB)" for t, (m, b) in sorted(run.topics.items()) if m)
    print(f"messages per topic (warm-up included): {sizes}")
    print(f"published in {run.published_s:.1f} s ({n / run.published_s:,.0f} events/s)")
    print(f"store complete after {run.stored_s:.1f} s: {n / run.stored_s:,.0f} events/s")
    print(f"budgets complete after {run.budgets_s:.1f} s: {n / run.budgets_s:,.0f} events/s")
    e2e = n / max(run.stored_s, run.budgets_s)
    print(f"pipeline end to end: {e2e:,.0f} events/s ({e2e / plain:.2f}x the plain loop's rate)")


if __name__ == "__main__":
    main()
