"""Change -> effect through the control plane, end to end, on the real processes.

Starts Kafka, the worker (pricing + spend), the billing service (store sink + admin API), the
HTTP ingest, and in this process the mock upstream, the reference gateway and its breaker client.
Then, ``K`` times each, measures from the admin API call to its effect seen by a client:

* a limit lowered below the next request's worst case -> the next gateway request is denied (429);
* an ingest key revoked -> the ingest answers 401;
* a budget created over a scope that already spent past its warning level -> its first threshold
  on the ``thresholds`` topic (the opening spend comes from the store).

Prints p50 and p99 (K samples each; the p99 of K < 100 is the worst) and, last,
``control: change -> effect p99 N ms over K changes``. Goal: p99 <= 2 s. Not a test.
Run: ``.venv/bin/python bench/bench_control.py [K]`` (default 20, ~2 min).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.broker import free_port, start_broker
from infra.demo_gateway import GatewayRig
from infra.topics import create_topics
from infra.workers import Proc, kafka_env, worker_command, worker_env
from tests.factories import event_dict
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.schema.raw_batch import event_time_ms

ADMIN = "demo-admin-token"
GATEWAY_KEY = "sk-demo-research-copilot"  # tenant acme, department research, project copilot


def call(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"null")


def until(check: Any, timeout_s: float = 30.0, every_s: float = 0.005) -> float:
    """Seconds until ``check()`` is true (polling every ``every_s``)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError("no effect within the timeout")
        time.sleep(every_s)
    return time.monotonic() - t0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main(k: int = 20) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        broker = start_broker(tmp / "kafka")
        procs: list[Proc] = []
        rig = None
        try:
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
            create_topics(settings)
            env = worker_env(settings, app_id="bench-control", datadir=tmp / "faust")
            procs.append(Proc(worker_command(), env, tmp / "worker.log").start())
            billing = [sys.executable, "-m", "billing", "--store", f"chdb://{tmp / 'chdb'}", "serve", "--port", "0"]
            billing += ["--sink", "--batch-wait-s", "0.1"]
            procs.append(Proc(billing, kafka_env(settings), tmp / "billing.log").start())
            procs[1].wait_log("serving on ")
            base = re.findall(r"serving on (http://\S+)", procs[1].log.read_text())[0]
            port = free_port()
            ingest_cmd = [sys.executable, "-m", "producers.ingest", "serve", "--port", str(port)]
            procs.append(Proc(ingest_cmd, kafka_env(settings), tmp / "ingest.log").start())
            procs[2].wait_log("ingest on ")
            ingest = f"http://127.0.0.1:{port}/v1/events"
            procs[0].wait_log("Worker ready")
            rig = GatewayRig(settings, CachedPriceTable(LayeredPriceTable.from_path()), tmp / "spool")
            admin = base + "/v1/admin"
            gateway = rig.server.url + "/v1/chat/completions"
            print(f"processes up (worker, billing + admin API, ingest, gateway in-process); {k} changes of each kind")

            deny = lowered_limits(rig, admin, gateway, k)
            revoke = revoked_keys(admin, ingest, k)
            first = created_budgets(settings, base, admin, k)
            rows = [("limit lowered -> gateway denies", deny), ("key revoked -> ingest 401", revoke)]
            rows.append(("budget created -> first threshold", first))
            for name, values in rows:
                p50, p99 = pct(values, 0.5) * 1000, pct(values, 0.99) * 1000
                print(f"{name}: p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(values)})")
            worst = max(pct(v, 0.99) for _, v in rows)
            print(f"control: change -> effect p99 {worst * 1000:.0f} ms over {sum(len(v) for _, v in rows)} changes")
        finally:
            if rig is not None:
                rig.stop()
            for p in reversed(procs):
                p.stop()
            broker.stop()


def lowered_limits(rig: GatewayRig, admin: str, gateway: str, k: int) -> list[float]:
    """Seconds from lowering a limit below the next request's worst case to the gateway's 429."""
    out = []
    for i in range(k):
        bid, user = f"lim-{i:03d}", f"bench-u{i}"
        body = {"tenant": "acme", "scope": {"user_id": user}, "limit_usd": "100"}
        assert call("PUT", f"{admin}/budgets/{bid}", ADMIN, body)[0] == 201
        until(lambda bid=bid: bid in rig.guard.breakers())
        req = {"model": "gpt-4o-mini", "user": user, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
        assert call("POST", gateway, GATEWAY_KEY, req)[0] == 200
        t0 = time.monotonic()
        assert call("PUT", f"{admin}/budgets/{bid}", ADMIN, {**body, "limit_usd": "0.000001"})[0] == 200
        until(lambda req=req: call("POST", gateway, GATEWAY_KEY, req)[0] == 429, every_s=0.01)
        out.append(time.monotonic() - t0)
    return out


def revoked_keys(admin: str, ingest: str, k: int) -> list[float]:
    """Seconds from revoking an ingest key to the ingest's 401."""
    out = []
    for i in range(k):
        status, key = call("POST", f"{admin}/keys", ADMIN, {"tenant": "acme", "kind": "ingest", "name": f"b{i}"})
        assert status == 201
        event = event_dict(request_id=f"bench-key-{i}")
        event["id"], event["time"] = f"bench-key-{i}", datetime.now(UTC).isoformat()
        until(lambda key=key, event=event: call("POST", ingest, key["secret"], event)[0] == 202)
        t0 = time.monotonic()
        assert call("DELETE", f"{admin}/keys/{key['id']}", ADMIN)[0] == 200
        until(lambda key=key, event=event: call("POST", ingest, key["secret"], event)[0] == 401, every_s=0.01)
        out.append(time.monotonic() - t0)
    return out


def created_budgets(settings: KafkaSettings, base: str, admin: str, k: int) -> list[float]:
    """Seconds from creating a budget over a scope past its warning level to its first threshold."""
    producer = Producer(settings.client_config())
    earlier = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(k):  # spend of the scopes before their budgets exist: 0.075 USD each
        doc = event_dict(request_id=f"pre-{i}", input_tokens=10_000, output_tokens=5_000, cached_read_tokens=0)
        doc["id"], doc["time"] = f"pre-{i}", earlier.isoformat()
        doc["data"]["labels"]["user"] = f"bench-t{i}"
        value = json.dumps(doc).encode()
        key = f"//svc/chat-api|pre-{i}".encode()
        producer.produce(settings.topics.usage_raw, value, key=key, timestamp=event_time_ms(value))
    producer.flush(10)
    until(lambda: _stored_requests(base, k), 60, 0.2)
    group = f"bench-{time.time_ns()}"
    thresholds = Consumer({**settings.client_config(), "group.id": group, "enable.auto.commit": False})
    thresholds.assign([TopicPartition(settings.topics.thresholds, 0, -1)])  # from the end
    thresholds.consume(10, 1.0)
    out = []
    for i in range(k):
        bid = f"new-{i:03d}"
        body = {"tenant": "acme", "scope": {"user_id": f"bench-t{i}"}, "limit_usd": "0.1"}
        t0 = time.monotonic()
        status, made = call("PUT", f"{admin}/budgets/{bid}", ADMIN, body)
        assert status == 201 and made["opening_nanos"] == 75_000_000, made
        while True:
            msgs = [m for m in thresholds.consume(100, 0.05) if not m.error()]
            if any(orjson.loads(m.value() or b"{}").get("budget_id") == bid for m in msgs):
                break
            if time.monotonic() - t0 > 30:
                raise TimeoutError(f"no threshold for {bid}")
        out.append(time.monotonic() - t0)
    thresholds.close()
    return out


def _stored_requests(base: str, k: int) -> bool:
    """Whether the store holds the ``k`` earlier requests (each user's bill of this month, acme's timezone)."""
    month = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    for i in range(k):
        status, _ = call("GET", f"{base}/v1/tenants/acme/bills/{month}/user_id/bench-t{i}.json", "demo-acme-token")
        if status != 200:
            return False
    return True


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
