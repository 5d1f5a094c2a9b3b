"""HTTP ingest on loopback: sustained events/s and request latency, with the topic checked.

Starts Kafka and ``python -m producers.ingest serve``, then posts simulated usage events from
4 client threads: first one event per request, then batches of 100, then batches of 100 whose
bodies arrive paced (8 KiB writes 2 ms apart over a raw socket: a slow network or proxy, the
path that used to be cut off and answered 400). Each request returns only
after the broker acknowledged its events. At the end the number of messages on ``usage-raw``
must equal what was accepted. Prints the batch/single ratio measured in the same run, and
the headline last: ``ingest: <N> events/s``.
Run: ``.venv/bin/python bench/bench_ingest.py [events]``. Not a timed test.
"""

from __future__ import annotations

import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from infra.broker import free_port, start_broker
from infra.topics import create_topics
from infra.workers import Proc, kafka_env
from tokenledger.kafka_config import KafkaSettings
from tokenledger.sample import simulate
from tokenledger.schema.raw_batch import is_batch, split_batch

CLIENTS = 4
KEY = "ti-demo-acme"
NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def events(n: int) -> list[dict[str, Any]]:
    """``n`` simulated events of tenant acme (months of simulated traffic, as many as needed)."""
    out: list[dict[str, Any]] = []
    seed = 7
    while len(out) < n:
        for doc in simulate(datetime(2026, 10, 1, tzinfo=UTC), 31, seed=seed):
            if doc["data"]["labels"].get("tenant") == "acme":
                doc["id"] = f"{doc['id']}-s{seed}"  # distinct events across repeated months
                doc["time"] = NOW  # inside the ingest's time window (arrival - 30 days .. + 5 min)
                out.append(doc)
            if len(out) == n:
                break
        seed += 1
    return out


def post(url: str, docs: list[dict[str, Any]]) -> float:
    """One request; returns its latency in seconds."""
    body = orjson.dumps(docs if len(docs) > 1 else docs[0])
    ctype = "application/cloudevents-batch+json" if len(docs) > 1 else "application/cloudevents+json"
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype, "Authorization": f"Bearer {KEY}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 202, resp.status
        resp.read()
    return time.perf_counter() - t0


def post_paced(url: str, docs: list[dict[str, Any]]) -> float:
    """One batch request over a raw socket, its body in 8 KiB writes 2 ms apart; its latency in seconds."""
    body = orjson.dumps(docs)
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/cloudevents-batch+json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    t0 = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(head)
        for i in range(0, len(body), 8192):
            s.sendall(body[i : i + 8192])
            time.sleep(0.002)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    return time.perf_counter() - t0


def run(url: str, docs: list[dict[str, Any]], per_request: int, paced: bool = False) -> tuple[float, list[float]]:
    """Post ``docs`` from ``CLIENTS`` threads, ``per_request`` events per request: (seconds, latencies)."""
    chunks = [docs[i : i + per_request] for i in range(0, len(docs), per_request)]
    latencies: list[float] = []
    lock = threading.Lock()

    def client(mine: list[list[dict[str, Any]]]) -> None:
        for chunk in mine:
            took = post_paced(url, chunk) if paced else post(url, chunk)
            with lock:
                latencies.append(took)

    threads = [threading.Thread(target=client, args=(chunks[k::CLIENTS],)) for k in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies


def events_on(settings: KafkaSettings, topic: str) -> tuple[int, int]:
    """Events on ``topic`` (batch messages split) and messages, read from the start."""
    c = Consumer({**settings.client_config(), "group.id": "bench-ingest-count", "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        events = messages = idle = 0
        while idle < 3:
            got = [m for m in c.consume(5000, 0.5) if not m.error()]
            idle = 0 if got else idle + 1
            for m in got:
                value = m.value() or b""
                messages += 1
                events += len(split_batch(value)) if is_batch(value) else 1
        return events, messages
    finally:
        c.close()


def p99(values: list[float]) -> float:
    """99th percentile in milliseconds."""
    return statistics.quantiles(values, n=100)[98] * 1000


def main() -> None:
    """Run and print; the headline figure last."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    single_n = min(2_000, n // 5)
    paced_n = min(5_000, n // 2)
    docs = events(n + single_n + paced_n)
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "kafka")
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(settings)
        port = free_port()
        ingest = Proc(
            [sys.executable, "-m", "producers.ingest", "serve", "--port", str(port)],
            kafka_env(settings),
            Path(tmp) / "ingest.log",
        ).start()
        try:
            ingest.wait_log("ingest on ")
            url = f"http://127.0.0.1:{port}/v1/events"
            single_s, single_lat = run(url, docs[:single_n], 1)
            batch_s, batch_lat = run(url, docs[single_n : single_n + n], 100)
            paced_s, paced_lat = run(url, docs[single_n + n :], 100, paced=True)
            stored, messages = events_on(settings, settings.topics.usage_raw)
        finally:
            ingest.stop()
            broker.stop()
    assert stored == n + single_n + paced_n, (stored, n + single_n + paced_n)
    single_rate, batch_rate, paced_rate = single_n / single_s, n / batch_s, paced_n / paced_s
    print(f"{CLIENTS} clients on loopback, broker acknowledgement before every answer")
    print(f"usage-raw holds {stored:,} events in {messages:,} messages (a request's events: one message per partition)")
    print(f"one event per request: {single_rate:,.0f} events/s, p99 {p99(single_lat):.1f} ms ({single_n:,} events)")
    print(f"batches of 100: {batch_rate:,.0f} events/s, p99 {p99(batch_lat):.1f} ms per request ({n:,} events)")
    print(
        f"batches of 100, bodies paced 8 KiB / 2 ms: {paced_rate:,.0f} events/s, p99 {p99(paced_lat):.1f} ms "
        f"per request ({paced_n:,} events, every one accepted)"
    )
    print(f"batch / single: {batch_rate / single_rate:.1f}x; paced / batch: {paced_rate / batch_rate:.2f}x")
    print(f"ingest: {batch_rate:,.0f} events/s")


if __name__ == "__main__":
    main()
