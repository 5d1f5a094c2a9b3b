"""Pipeline throughput end to end vs a plain-Python loop, measured in one run.

End to end: ``UsagePublisher`` -> tansu -> pricing agent (Faust process) -> ``usage-priced``
-> spend agent (Faust process: windows, budgets, breakers) and the store sink (this
process) -> chdb. Timed from the first publish until the store holds every request and the
spend agent has committed every priced event. Each worker's CPU seconds are read from
``/proc``, so events per worker-CPU-second ("per core") are reported too.

Plain loop, same events, same machine: ``json.loads`` + pydantic validation + ``price()``
+ the same per-dimension day/month/hour folds, in one Python loop, nothing else.

Run: ``.venv/bin/python bench/bench_pipeline.py [events]``. Not a timed test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import Consumer, TopicPartition

from infra.broker import start_broker
from infra.topics import create_topics
from infra.workers import worker_env
from producers.publisher import UsagePublisher
from stream_jobs.kafka_io import ConfluentBatchConsumer, KafkaDeadLetter
from stream_jobs.spend_state import DIMENSIONS, When, add_spend, state_key
from stream_jobs.store_sink import StoreSink
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


def events(n: int) -> list[dict[str, Any]]:
    """``n`` simulated requests (November)."""
    out = []
    for raw in simulate(datetime(2026, 11, 1, tzinfo=TZ), 30):
        out.append(raw)
        if len(out) == n:
            break
    return out


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


def committed(settings: KafkaSettings, group: str, topic: str) -> tuple[int, int]:
    """(committed, end) summed over a topic's partitions for a group."""
    c = Consumer({**settings.client_config(), "group.id": group, "enable.auto.commit": False})
    parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10).topics[topic].partitions]
    done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
    end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    c.close()
    return done, end


def main() -> None:  # noqa: PLR0915 - a linear script, read top to bottom
    """Run both and print the ratio."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3_000
    table = CachedPriceTable(LayeredPriceTable.from_path())
    docs = events(n)
    raws = [json.dumps(d).encode() for d in docs]
    plain = plain_loop(raws, table)
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(log_path=Path(tmp) / "tansu.log")
        store = ChdbStore(Path(tmp) / "chdb")
        migrate(store)
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(settings)
        procs = []
        for role in ("pricing", "spend"):
            env = worker_env(settings, app_id=APP, datadir=Path(tmp) / f"faust-{role}", role=role)
            log = (Path(tmp) / f"{role}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "stream_jobs", "worker", "-l", "warn"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        time.sleep(20)  # both workers joined and idle before the clock starts
        print(f"plain loop: {plain:,.0f} events/s; workers started, publishing {n:,} events", flush=True)
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        t0 = time.perf_counter()
        publisher = UsagePublisher(settings, spool=None)
        for raw, doc in zip(raws, docs, strict=True):
            publisher.publish_raw(f"{doc['source']}|{doc['data']['request_id']}".encode(), raw)
        publisher.flush()
        consumer = ConfluentBatchConsumer(settings, settings.topics.usage_priced, "bench-sink")
        sink = StoreSink(store, consumer, KafkaDeadLetter(settings), batch_size=2_000, batch_wait_s=0.2)
        rows = 0
        deadline = time.monotonic() + 900
        while rows < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"store holds {rows}/{n}; a worker exited or 900 s passed: see {tmp}/*.log")
            if sink.run_once():
                rows = int(store.query("SELECT count() FROM usage_events FINAL").scalar())
        stored_s = time.perf_counter() - t0
        print(f"store complete after {stored_s:.1f} s", flush=True)
        while True:
            done, end = committed(settings, f"{APP}-spend", settings.topics.usage_priced)
            if done >= end >= n:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"spend agent committed {done}/{end} after 900 s")
            time.sleep(0.2)
        total_s = time.perf_counter() - t0
        cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
        consumer.close()
        for p in procs:
            p.terminate()
            p.wait(30)
        store.close()
        broker.stop()
    e2e = n / total_s
    print(f"{n:,} events; plain loop (decode + validate + price + 7 dimension folds): {plain:,.0f} events/s")
    print(
        f"pipeline end to end: store complete after {stored_s:.1f} s, windows and budgets after {total_s:.1f} s "
        f"-> {e2e:,.0f} events/s ({plain / e2e:.0f}x slower than the plain loop)"
    )
    print(
        f"worker CPU: pricing {cpu[0]:.1f} s ({n / cpu[0]:,.0f} events per CPU-second), "
        f"spend {cpu[1]:.1f} s ({n / cpu[1]:,.0f} events per CPU-second)"
    )


if __name__ == "__main__":
    main()
