"""Pipeline throughput end to end vs a plain-Python loop, measured in one run.

End to end: ``UsagePublisher`` -> Apache Kafka 3.9 -> pricing agent (Faust process) ->
``usage-priced`` -> spend agent (Faust process: windows, budgets, breakers) and the store sink
(``python -m stream_jobs sink`` process) -> chdb. Timed from the first publish until the spend
agent and the sink have committed every priced event (the sink commits only after the store
acknowledged the insert); the store is then checked to hold every request. Each process's CPU
seconds are read from ``/proc``, so events per CPU-second ("per core") are reported too.

Plain loop, same events, same machine: ``json.loads`` + pydantic validation + ``price()``
+ the same per-dimension day/month/hour folds, in one Python loop, nothing else.

Run: ``.venv/bin/python bench/bench_pipeline.py [events]``. Not a timed test.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from infra.broker import start_broker
from infra.topics import create_topics
from infra.workers import Proc, committed_and_end, kafka_env, sink_command, worker_command, worker_env
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


def events(n: int) -> list[dict[str, Any]]:
    """``n`` simulated requests from November on (about 560 a day)."""
    out = []
    for raw in simulate(datetime(2026, 11, 1, tzinfo=TZ), 365):
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


def main() -> None:
    """Run both and print the ratio."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3_000
    table = CachedPriceTable(LayeredPriceTable.from_path())
    docs = events(n)
    if len(docs) < n:
        raise SystemExit(f"the simulation yields {len(docs):,} events, fewer than {n:,}")
    raws = [json.dumps(d).encode() for d in docs]
    plain = plain_loop(raws, table)
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka")
        store = ChdbStore(Path(tmp) / "chdb")
        migrate(store)
        store.close()  # the sink process owns it while it runs
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(settings)
        procs = [
            Proc(
                worker_command("warn"),
                worker_env(settings, app_id=APP, datadir=Path(tmp) / f"faust-{role}", role=role),
                Path(tmp) / f"{role}.log",
            ).start()
            for role in ("pricing", "spend")
        ]
        sink = sink_command(f"chdb://{tmp}/chdb", "bench-sink", batch_size=2_000, batch_wait_s=0.2)
        procs.append(Proc(sink, kafka_env(settings), Path(tmp) / "sink.log").start())
        time.sleep(20)  # every process joined its group and idles before the clock starts
        print(f"plain loop: {plain:,.0f} events/s; workers started, publishing {n:,} events", flush=True)
        cpu0 = [cpu_seconds(p.proc.pid) for p in procs if p.proc]
        t0 = time.perf_counter()
        publisher = UsagePublisher(settings, spool=None)
        for raw, doc in zip(raws, docs, strict=True):
            publisher.publish_raw(f"{doc['source']}|{doc['data']['request_id']}".encode(), raw)
        publisher.flush()
        deadline = time.monotonic() + 900
        stages = [(f"{APP}-spend", settings.topics.spend_deltas), ("bench-sink", settings.topics.usage_priced)]
        done_at: dict[str, float] = {}
        while len(done_at) < len(stages):
            if time.monotonic() > deadline or not all(p.alive for p in procs):
                raise SystemExit(f"a process exited or 900 s passed: see {tmp}/*.log")
            for group, topic in stages:
                done, ends = committed_and_end(settings, group, topic)
                if group not in done_at and done == ends >= n:
                    done_at[group] = time.perf_counter() - t0
            time.sleep(0.2)
        total_s = max(done_at.values())
        stored_s = done_at["bench-sink"]
        cpu = [cpu_seconds(p.proc.pid) - c for p, c in zip(procs, cpu0, strict=True) if p.proc]
        for p in procs:
            p.stop()
        store = ChdbStore(Path(tmp) / "chdb")
        rows = int(store.query("SELECT count() FROM usage_events FINAL").scalar())
        store.close()
        broker.stop()
    if rows != n:
        raise SystemExit(f"store holds {rows}/{n} requests")
    e2e = n / total_s
    print(f"{n:,} events; plain loop (decode + validate + price + 7 dimension folds): {plain:,.0f} events/s")
    print(
        f"process CPU: pricing {cpu[0]:.1f} s ({n / cpu[0]:,.0f} events per CPU-second), "
        f"spend {cpu[1]:.1f} s ({n / cpu[1]:,.0f} events per CPU-second), sink {cpu[2]:.1f} s"
    )
    print(
        f"pipeline end to end: store complete after {stored_s:.1f} s, windows and budgets after {total_s:.1f} s "
        f"-> {e2e:,.0f} events/s ({plain / e2e:.0f}x slower than the plain loop)"
    )


if __name__ == "__main__":
    main()
