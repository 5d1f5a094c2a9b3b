"""The pipeline on a three-broker Apache Kafka cluster: a broker killed under load, then a rolling restart.

Starts three KRaft nodes from the project's jars on loopback (default replication factor 3,
``min.insync.replicas`` 2), creates the topics with the project's command (the cluster's
replication), runs the pricing worker, the spend worker and the billing service (store sink +
bills over HTTP), and publishes a simulated month at a steady rate. While it streams, the
broker leading the most partitions is killed with -9 and restarted 20 s later; then, still
under load, every broker is restarted in turn (SIGTERM, start, wait until every partition has its
three replicas in sync again). Then it checks, against the events themselves: the store's
request count and nano-USD, every (tenant, department) bill over HTTP, and the spend table;
that no process exited or reports itself unhealthy; and that nothing aborted.

Stage stalls: each stage's committed offsets are sampled every 0.25 s; a stall is the longest
time a stage with events waiting did not advance, per fault window. Goal: under 15 s for the
kill -9, under 5 s per step of the rolling restart.

Run: ``.venv/bin/python bench/bench_cluster.py [events]`` (default 40,000 at 400 events/s, so the
kill and the whole rolling restart happen under load; ~4 min). Not a test:
three JVMs and four Python processes on two cores are too much for CI next to the suite.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.broker import free_port
from infra.cluster import Cluster, start_cluster
from infra.topics import SIMULATION_RETENTION_MS
from infra.workers import Proc, kafka_env, latest_values, worker_command, worker_env
from producers.publisher import UsagePublisher
from stream_jobs.spend_state import When, state_key
from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.sample import simulate

TZ = ZoneInfo("Asia/Shanghai")
APP = "tl-cluster"
SINK_GROUP = "tl-cluster-sink"
TOKENS = {"acme": "demo-acme-token", "globex": "demo-globex-token"}
RATE_PER_S = 400


@dataclass
class Stage:
    """One stage's consumer group and input topic, and what the sampler saw."""

    name: str
    group: str
    topic: str
    last_done: int = -1
    last_move: float = field(default_factory=time.monotonic)
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (when it resumed, how long it stood)


class Sampler:
    """Samples each stage's committed and end offsets; records stalls while events wait."""

    def __init__(self, settings: KafkaSettings, stages: list[Stage]) -> None:
        self.settings, self.stages = settings, stages
        self.stop = threading.Event()
        self.consumers = {
            s.name: Consumer(
                {**settings.client_config(), "group.id": s.group, "enable.auto.commit": False, "log_level": 0}
            )
            for s in stages
        }

    def run(self) -> None:
        """Until ``stop``."""
        while not self.stop.wait(0.25):
            for stage in self.stages:
                try:
                    done, ends = self._offsets(stage)
                except Exception:
                    continue
                now = time.monotonic()
                if done > stage.last_done:
                    stood = now - stage.last_move
                    if stage.last_done >= 0 and stood > 1.0:
                        stage.stalls.append((now, stood))
                    stage.last_done, stage.last_move = done, now
                elif ends <= done:  # nothing waits: idle is not a stall
                    stage.last_move = now

    def _offsets(self, stage: Stage) -> tuple[int, int]:
        c = self.consumers[stage.name]
        meta = c.list_topics(stage.topic, timeout=2).topics[stage.topic]
        parts = [TopicPartition(stage.topic, p) for p in meta.partitions]
        ends = sum(c.get_watermark_offsets(tp, timeout=2, cached=False)[1] for tp in parts)
        done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=2))
        return done, ends

    def worst(self, start: float, end: float) -> dict[str, float]:
        """Each stage's longest stall that ended within ``[start, end + 30 s]``."""
        return {
            s.name: max((stood for at, stood in s.stalls if start <= at <= end + 30), default=0.0) for s in self.stages
        }


def leader_counts(cluster: Cluster) -> dict[int, int]:
    """Partitions led by each broker."""
    meta = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0}).list_topics(timeout=10)
    counts: dict[int, int] = defaultdict(int)
    for topic in meta.topics.values():
        for p in topic.partitions.values():
            counts[p.leader] += 1
    return counts


def fully_replicated(cluster: Cluster) -> bool:
    """Every partition has three replicas in sync."""
    meta = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 0}).list_topics(timeout=10)
    return all(len(p.isrs) == 3 for t in meta.topics.values() for p in t.partitions.values())


def wait(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out: {what}")


def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"{}")


def main() -> None:  # noqa: PLR0915 - one scenario, in order
    """Run the scenario and print the stalls; the headline last."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    docs = []
    for raw in simulate(datetime(2026, 11, 1, tzinfo=TZ), 30, scale=max(1.0, n / 15_000)):
        docs.append(raw)
        if len(docs) == n:
            break
    lines = [orjson.dumps(d) for d in docs]
    stats = BatchStats()
    truth = [
        (ev, cost.total_nanos)
        for ev, cost in priced_events(lines, CachedPriceTable(LayeredPriceTable.from_path()), stats)
    ]
    by_dept: dict[tuple[str, str, str], int] = defaultdict(int)  # (tenant, department, spend-table month key)
    bill_month: dict[str, str] = {}  # spend-table month key -> YYYY-MM in the billing timezone
    for ev, nanos in truth:
        month = When.of(ev.time, TZ).month
        bill_month[month] = ev.time.astimezone(TZ).strftime("%Y-%m")
        by_dept[(ev.data.labels.tenant, ev.data.labels.department or "", month)] += nanos
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        cluster = start_cluster(root / "kafka")
        print(f"three-broker KRaft cluster up in {time.monotonic() - t0:.1f} s: {cluster.bootstrap}")
        settings = KafkaSettings(bootstrap_servers=cluster.bootstrap)
        topics = subprocess.run(  # the operator's command, on the cluster
            [sys.executable, "-m", "infra", "topics", "--retention-ms", str(SIMULATION_RETENTION_MS)],
            env=kafka_env(settings),
            capture_output=True,
            text=True,
            check=True,
        )
        print("python -m infra topics: " + "; ".join(topics.stdout.strip().splitlines()))
        procs: list[Proc] = []
        ports = {"pricing": free_port(), "spend": free_port()}
        for role in ("pricing", "spend"):
            env = worker_env(settings, app_id=APP, datadir=root / f"faust-{role}", role=role, metrics_port=ports[role])
            procs.append(Proc(worker_command(), env, root / f"{role}.log").start())
        billing_port = free_port()
        billing = Proc(
            [
                sys.executable,
                "-m",
                "billing",
                "--store",
                f"chdb://{root / 'chdb'}",
                "serve",
                "--sink",
                "--port",
                str(billing_port),
                "--group",
                SINK_GROUP,
            ],
            {**kafka_env(settings), "TOKENLEDGER_APP_ID": APP},
            root / "billing.log",
        ).start()
        procs.append(billing)
        for p in procs[:2]:
            p.wait_log("Worker ready", 180)
        billing.wait_log("serving on ", 180)
        base = f"http://127.0.0.1:{billing_port}"
        stages = [
            Stage("pricing", f"{APP}-pricing", settings.topics.usage_raw),
            Stage("spend", f"{APP}-spend", settings.topics.spend_deltas),
            Stage("sink", SINK_GROUP, settings.topics.usage_priced),
        ]
        sampler = Sampler(settings, stages)
        threading.Thread(target=sampler.run, daemon=True).start()
        publisher = UsagePublisher(settings, spool=root / "spool.jsonl", record_time="event")

        def publish() -> None:
            t_pub = time.monotonic()
            for i, doc in enumerate(docs):
                publisher.publish_raw(f"{doc['source']}|{doc['data']['request_id']}".encode(), lines[i])
                pause = t_pub + (i + 1) / RATE_PER_S - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            publisher.flush(120)

        publishing = threading.Thread(target=publish, daemon=True)
        t_pub = time.monotonic()
        publishing.start()
        time.sleep(10)
        counts = leader_counts(cluster)
        victim = max(counts, key=lambda b: counts[b])
        kill_start = time.monotonic()
        cluster.node(victim).kill()
        time.sleep(20)
        cluster.node(victim).start(wait=False)
        kill_end = time.monotonic()
        print(
            f"broker {victim} (leading {counts[victim]} partitions) killed -9 at +10 s under load, restarted 20 s later"
        )
        wait(lambda: fully_replicated(cluster), 180, "every partition back to three in-sync replicas")
        steps: list[tuple[int, float, float]] = []
        for node in cluster.nodes:  # a rolling restart, still under load
            start = time.monotonic()
            node.stop()
            node.start(wait=False)
            wait(lambda: fully_replicated(cluster), 180, f"broker {node.node_id} back in sync")
            steps.append((node.node_id, start, time.monotonic()))
        during = "under load" if publishing.is_alive() else "after the load ended: use more events"
        print(f"rolling restart ({during}): {', '.join(f'broker {b} {end - s:.0f} s' for b, s, end in steps)}")
        publishing.join()
        print(f"published {n:,} events in {time.monotonic() - t_pub:.0f} s at {RATE_PER_S} events/s")
        kill_window = (kill_start, kill_end)

        def drained() -> bool:
            return all(sampler._offsets(s)[0] >= sampler._offsets(s)[1] for s in stages)

        wait(drained, 300, "every stage to catch up")
        time.sleep(2)
        sampler.stop.set()
        publisher.close()
        alive = {p.log.stem: p.alive for p in procs}
        health = {
            "billing": get_json(f"{base}/healthz")[0],
            **{role: get_json(f"http://127.0.0.1:{port}/healthz")[0] for role, port in ports.items()},
        }
        summary = {t: 0 for t in TOKENS}
        ok_bills, bad_bills = 0, []
        for (tenant, dept, month), nanos in sorted(by_dept.items()):
            status, doc = get_json(
                f"{base}/v1/tenants/{tenant}/bills/{bill_month[month]}/department/{dept}.json", TOKENS[tenant]
            )
            got = doc.get("summary", {}).get("cost_nanos") if status == 200 else None
            summary[tenant] += got or 0
            if got == nanos:
                ok_bills += 1
            else:
                bad_bills.append((tenant, dept, month, got, nanos))
        spend_ok = _spend_matches(settings, by_dept)
        for p in procs:
            p.stop()
        aborted = [p.log.name for p in procs if "Assertion" in p.log.read_text() or "ABORTED" in p.log.read_text()]
        cluster.stop()
    total = sum(nanos for _, nanos in truth)
    print(f"store via bills: {sum(summary.values()):,} nano-USD of {total:,} expected ({len(truth):,} requests)")
    print(f"bills exact: {ok_bills} of {len(by_dept)}{'' if not bad_bills else f'; wrong: {bad_bills[:3]}'}")
    print(f"spend table exact: {spend_ok}; processes alive: {alive}; /healthz: {health}; aborted: {aborted or 'none'}")
    kill_stall = sampler.worst(*kill_window)
    print("stage stalls, kill -9 of the busiest broker: " + ", ".join(f"{k} {v:.1f} s" for k, v in kill_stall.items()))
    for b, s, end in steps:
        print(
            f"stage stalls, restart of broker {b}: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sampler.worst(s, end).items())
        )
    step_worst = max((max(sampler.worst(s, end).values()) for _, s, end in steps), default=0.0)
    exact = sum(summary.values()) == total and not bad_bills and spend_ok
    print(
        f"cluster: exact {exact}; worst stall {max(kill_stall.values()):.1f} s (kill -9), "
        f"{step_worst:.1f} s (rolling step)"
    )


def _spend_matches(settings: KafkaSettings, by_dept: dict[tuple[str, str, str], int]) -> bool:
    """The spend table's month total of every (tenant, department) equals the events'."""
    state = {orjson.loads(k or b'""'): v for k, v in latest_values(settings, f"{APP}-spend-spend-changelog", 4).items()}
    for (tenant, dept, month), nanos in by_dept.items():
        record = state.get(state_key(tenant, "department", dept))
        if record is None or record["month"].get(month) != nanos:
            return False
    return True


if __name__ == "__main__":
    main()
