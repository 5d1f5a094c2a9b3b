"""Recovery after ``kill -9`` of a stream worker under load, on Apache Kafka 3.9.

Starts the broker, the pricing worker, the spend worker and the store sink (separate processes,
as ``make up`` runs them), publishes simulated requests at a steady rate, and every ``gap``
seconds kills one worker with SIGKILL at a random moment (pricing and spend in turn) and
restarts it at once. For each kill it measures, from the kill:

* **back**: until the killed stage's consumer group commits past where it stood (it consumes again);
* **caught up**: until every request published before the kill is priced, folded into the
  budgets and stored (each stage's committed offsets reach the ends they had to reach).

At the end the store is checked against the ground truth (count and nano-USD sum): exact.
``--static`` runs the workers as static group members (``TOKENLEDGER_INSTANCE_ID``); ``--term``
stops each worker cleanly (SIGTERM: it leaves its group) instead of killing it.

Run: ``.venv/bin/python -m bench.bench_recovery [kills] [rate/s] [--static] [--term]``. Last line:
``recovery: worker back in N s (p50 over K kills)``. Not a timed test.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.bench_pipeline import events, truth_of
from infra.broker import start_broker
from infra.topics import SIMULATION_RETENTION_MS, create_topics
from infra.workers import Proc, committed_and_end, kafka_env, sink_command, worker_command, worker_env
from producers.publisher import UsagePublisher
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate

APP = "tl-recovery"
SINK = "recovery-sink"


def committed_at_least(settings: KafkaSettings, stage: tuple[str, str], offset: int) -> bool:
    """Whether ``stage`` (group, topic) has committed at least ``offset`` messages in all."""
    return committed_and_end(settings, *stage)[0] >= offset


def all_at_least(settings: KafkaSettings, ends: list[tuple[tuple[str, str], int]]) -> bool:
    """:func:`committed_at_least` of each ``(stage, offset)``."""
    return all(committed_at_least(settings, stage, offset) for stage, offset in ends)


def drained(settings: KafkaSettings, stage: tuple[str, str]) -> bool:
    """Whether ``stage`` (group, topic) has committed every message of its topic."""
    done, end = committed_and_end(settings, *stage)
    return done == end


def wait_until(check: Callable[[], bool], limit_s: float = 300.0) -> float:
    """Poll ``check`` every 0.1 s; the monotonic time it first held."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("a stage did not recover within 300 s")
        time.sleep(0.1)
    return time.monotonic()


def main() -> None:  # noqa: PLR0915 - one scripted run
    """Publish, kill, measure, verify."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    static = "--static" in sys.argv
    term = "--term" in sys.argv
    kills = int(args[0]) if args else 6
    rate = int(args[1]) if len(args) > 1 else 1000
    gap = 25.0
    total = int(rate * (gap * kills + 20))
    table = CachedPriceTable(LayeredPriceTable.from_path())
    docs = events(total)
    raws = [json.dumps(d).encode() for d in docs]
    truth_total, _ = truth_of(raws, table)
    rng = random.Random(7)
    tmp = tempfile.mkdtemp(prefix="bench-recovery-")
    print(f"logs in {tmp} (removed after an exact run)")
    broker = start_broker(Path(tmp) / "kafka")
    store = ChdbStore(Path(tmp) / "chdb")
    migrate(store)
    store.close()
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    create_topics(settings, retention_ms=SIMULATION_RETENTION_MS)
    t = settings.topics
    workers: dict[str, Proc] = {}
    for role in ("pricing", "spend"):
        env = worker_env(settings, app_id=APP, datadir=Path(tmp) / f"faust-{role}", role=role, metrics_port=0)
        if static:
            env["TOKENLEDGER_INSTANCE_ID"] = f"{role}-0"
        level = "info" if "--info" in sys.argv else "warn"
        workers[role] = Proc(worker_command(level), env, Path(tmp) / f"{role}.log").start()
    sink = Proc(
        sink_command(f"chdb://{tmp}/chdb", SINK, batch_size=5_000, batch_wait_s=0.2),
        kafka_env(settings),
        Path(tmp) / "sink.log",
    ).start()
    time.sleep(15)
    stages = {
        "pricing": (f"{APP}-pricing", t.usage_raw),
        "spend": (f"{APP}-spend", t.spend_deltas),
        "sink": (SINK, t.usage_priced),
    }
    publisher = UsagePublisher(settings, spool=None, record_time="event")
    done = threading.Event()

    def publish() -> None:
        t0 = time.monotonic()
        for i, (raw, doc) in enumerate(zip(raws, docs, strict=True)):
            publisher.publish_raw(f"{doc['source']}|{doc['data']['request_id']}".encode(), raw)
            if i % 100 == 99:
                publisher.flush()
                ahead = (i + 1) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        publisher.flush()
        done.set()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    print(f"publishing {total:,} requests at {rate:,}/s; {'static' if static else 'dynamic'} membership")
    results: list[tuple[str, float, float]] = []
    for k in range(kills):
        time.sleep(gap * 0.4 + rng.random() * gap * 0.4)
        role = "spend" if "--spend" in sys.argv else ("pricing", "spend")[k % 2]
        group, topic = stages[role]
        raw_end = committed_and_end(settings, *stages["pricing"])[1]
        before = committed_and_end(settings, group, topic)[0]
        killed_at = time.monotonic()
        if term:  # a clean stop: the worker commits and leaves its group, the restarted one joins at once
            workers[role].stop()
            before = committed_and_end(settings, group, topic)[0]  # what the clean stop committed
        else:
            workers[role].kill9()
        workers[role].start()
        back = wait_until(partial(committed_at_least, settings, (group, topic), before + 1)) - killed_at
        wait_until(partial(committed_at_least, settings, stages["pricing"], raw_end))
        # Every request published before the kill is priced: the stores downstream need what is out now.
        ends = [(stages[s], committed_and_end(settings, *stages[s])[1]) for s in ("spend", "sink")]
        caught = wait_until(partial(all_at_least, settings, ends)) - killed_at
        results.append((role, back, caught))
        how = "SIGTERM" if term else "kill -9"
        print(f"{how} {role}: consuming again after {back:.1f} s, caught up after {caught:.1f} s", flush=True)
        time.sleep(gap * 0.2)
    thread.join()

    for stage in stages.values():
        wait_until(partial(drained, settings, stage), 600)
    for p in (*workers.values(), sink):
        p.stop()
    store = ChdbStore(Path(tmp) / "chdb")
    rows, nanos = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
    store.close()
    publisher.close()
    broker.stop()
    exact = (int(rows), int(nanos)) == (total, truth_total)
    if exact and "--keep" not in sys.argv:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"store: {int(rows):,} requests, {int(nanos):,} nano-USD; truth {total:,}, {truth_total:,}: "
        f"{'exact' if exact else 'DIFFERENT'}"
    )
    for role in ("pricing", "spend"):
        mine = [r for r in results if r[0] == role]
        if mine:
            backs, caughts = [b for _, b, _ in mine], [c for _, _, c in mine]
            print(
                f"{role}: back p50 {statistics.median(backs):.1f} s (max {max(backs):.1f}), "
                f"caught up p50 {statistics.median(caughts):.1f} s over {len(mine)} kills"
            )
    if not exact:
        raise SystemExit("the store is not exact")
    p50 = statistics.median(b for _, b, _ in results)
    print(f"recovery: worker back in {p50:.1f} s (p50 over {len(results)} kills)")


if __name__ == "__main__":
    main()
