"""How long a restarted spend worker takes to restore the spend state of many users, on Apache Kafka 3.9.

Writes the ``spend`` table's changelog for ``users`` distinct users (one request each: every
dimension key's record, as the worker writes it, see ``bench/bench_memory_users.py``) to a
real broker, then starts a spend worker (``python -m stream_jobs worker``, role ``spend``) on
it and times, from the process start, until its ``/readyz`` answers 200: Faust has replayed the
changelog into the table and the worker consumes. A worker start with an empty table is timed
the same way first, so the replay's own share is the difference.

Run: ``.venv/bin/python -m bench.bench_table_recovery [users]``. Last line: ``table recovery:
N users' state in S s``. Not a timed test.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import Producer

from bench.bench_memory_users import spend_changelog
from infra.broker import free_port, start_broker
from infra.topics import create_topics
from infra.workers import Proc, worker_command, worker_env
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema.raw_batch import partition_for

PARTITIONS = 3  # the workers' default (TOKENLEDGER_PARTITIONS)


def ready_after(settings: KafkaSettings, tmp: Path, app_id: str, name: str) -> float:
    """Start a spend worker of ``app_id``; seconds until its ``/readyz`` says 200. Stops it."""
    port = free_port()
    env = worker_env(settings, app_id=app_id, datadir=tmp / f"faust-{name}", role="spend", metrics_port=port)
    t0 = time.perf_counter()
    proc = Proc(worker_command("warn"), env, tmp / f"{name}.log").start()
    try:
        while True:
            if not proc.alive:
                raise SystemExit(f"the worker exited: see {tmp / f'{name}.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except (urllib.error.URLError, OSError):
                pass
            if time.perf_counter() - t0 > 3600:
                raise SystemExit("not ready within an hour")
            time.sleep(0.1)
    finally:
        proc.stop()


def fill(settings: KafkaSettings, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Write changelog records where the worker writes them: a key's partition of ``spend-deltas``."""
    producer = Producer({**settings.producer_config(), "linger.ms": 20, "batch.size": 1_000_000})
    for key, wire in records:
        while True:
            try:
                producer.produce(
                    topic, wire, json.dumps(key).encode(), partition=partition_for(key.encode(), PARTITIONS)
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("the changelog was not written")


def main() -> None:
    """Empty start, then a start over ``users`` users' spend records; the difference is the replay."""
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    records = spend_changelog(users)
    print(f"{users:,} users: {len(records):,} spend records ({sum(len(w) for _, w in records) / 1e6:,.0f} MB JSON)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = start_broker(tmp / "kafka")
        try:
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
            create_topics(settings)
            empty = ready_after(settings, tmp, "tl-empty", "empty")
            print(f"worker ready with an empty table after {empty:.1f} s (process start, group join)", flush=True)
            ready_after(settings, tmp, "tl-full", "create")  # creates the changelog topics, as a first start does
            t0 = time.perf_counter()
            fill(settings, "tl-full-spend-spend-changelog", records)
            print(f"changelog written in {time.perf_counter() - t0:.1f} s", flush=True)
            full = ready_after(settings, tmp, "tl-full", "full")
        finally:
            broker.stop()
    replay = full - empty
    print(
        f"worker ready over {len(records):,} records after {full:.1f} s: replay {replay:.1f} s, "
        f"{len(records) / max(replay, 1e-9):,.0f} records/s"
    )
    print(f"table recovery: {users:,} users' state in {full:.1f} s")


if __name__ == "__main__":
    main()
