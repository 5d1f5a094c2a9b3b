"""A fleet of gateways on one Redis: do the limits and a shared budget hold, and what does it add per request?

Starts Kafka, the mock upstream, one Redis (Debian's ``redis-server``) and ``G`` gateway
processes (``python -m producers.gateway serve --redis``, default 8) following the control topic,
where it writes one rate limit (requests and tokens per minute for the key) and a budget breaker
for the same key with room for a known number of worst cases. Then ``C`` concurrent clients
(default 1,000; half of them streaming) call the gateways round-robin for ``D`` seconds, backing
off 0.1-0.3 s after a 429.

It prints, against what the buckets allow over the run (``L + L·D/60``, full at the start):
admitted requests and tokens (tokens as the gateways charged them: the provider's figures) and
their ratio to the allowance; the budget's admitted cost against its limit, in worst cases;
then the limiter's own added latency per request, measured sequentially so that no queueing is
counted (admit, then finish: bucket correction and slot release in one script): in process, and
through Redis on loopback. Last line:
``gateway limits: overshoot X % over G replicas, p99 Y ms``. Not a test.
Run: ``.venv/bin/python bench/bench_gateway_fleet.py [G] [C] [D]`` (default 8 1000 20; ~1 min).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from confluent_kafka import Producer

from infra.broker import free_port, start_broker
from infra.topics import create_topics
from infra.workers import Proc, kafka_env
from producers.gateway.config import GatewayConfig, GatewayKey
from producers.gateway.mock_upstream import MockUpstream
from producers.gateway.redis_limits import LocalLimits, RedisLimits
from producers.gateway.reservations import worst_case_pricer
from producers.gateway.server import ServerThread
from tokenledger.control.follow import follow
from tokenledger.control.log import ControlWriter
from tokenledger.control.records import RateLimit
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.ratelimit import plan

TOKEN, BUDGET_TOKEN = "sk-bench-fleet", "sk-bench-budget"
KEY = GatewayKey(
    name="fleet",
    key_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    tenant="acme",
    features=("chat",),
    user_from="body",
)
BUDGET_KEY = GatewayKey(
    name="fleet-b",
    key_sha256=hashlib.sha256(BUDGET_TOKEN.encode()).hexdigest(),
    tenant="acme",
    features=("chat",),
    user_from="body",
)
RPM, TPM = 1_200, 60_000  # below what 2 cores push through 8 gateways (~130 requests/s): the limits bind
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello fleet"}], "max_tokens": 60}
BUDGET_WORST_CASES = 1_000  # the other key's budget: it binds within the run


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _tally() -> dict[str, Any]:
    return {"ok": 0, "limited": 0, "budget": 0, "other": {}, "tokens": 0, "cost": 0, "last": 0.0}


async def clients(urls: list[str], n: int, seconds: float) -> dict[str, Any]:
    """``n`` concurrent clients for ``seconds``; what was admitted and charged, per key (``b``: the budgeted one)."""
    out: dict[str, Any] = {**_tally(), "b": _tally()}
    out["start"] = time.monotonic()  # admissions begin at once: the buckets are full at this instant
    stop = out["start"] + seconds
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as s:

        async def one(i: int) -> None:
            rng = random.Random(i)
            stream = i % 2 == 0
            token = TOKEN if i % 4 < 2 else BUDGET_TOKEN  # half on the rate-limited key, half on the budgeted one
            mine = out if token == TOKEN else out["b"]
            body = {**BODY, "stream": stream, "user": f"u{i}"}
            if stream:
                body["stream_options"] = {"include_usage": True}
            k = i
            auth = {"Authorization": f"Bearer {token}"}
            while time.monotonic() < stop:
                k += 1
                async with s.post(urls[k % len(urls)] + "/v1/chat/completions", json=body, headers=auth) as r:
                    raw = await r.read()
                    if r.status == 200:
                        mine["last"] = max(mine["last"], time.monotonic())
                        mine["ok"] += 1
                        usage, cost = _usage(raw, stream, r.headers)
                        mine["tokens"] += usage
                        mine["cost"] += cost
                        continue
                    if r.status == 429:
                        mine["budget" if r.headers.get("X-Tokenledger-Budget") else "limited"] += 1
                    else:
                        mine["other"][r.status] = mine["other"].get(r.status, 0) + 1
                await asyncio.sleep(rng.uniform(0.1, 0.3))

        await asyncio.gather(*(one(i) for i in range(n)))
    return out


def _usage(raw: bytes, stream: bool, headers: Any) -> tuple[int, int]:
    if not stream:
        doc = orjson.loads(raw)
        return int(doc["usage"]["total_tokens"]), int(headers["X-Tokenledger-Cost-Nanos"])
    tokens = cost = 0
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            doc = orjson.loads(line[6:])
            if doc.get("usage"):
                tokens = int(doc["usage"]["total_tokens"])
        elif line.startswith(b": tokenledger cost_nanos="):
            cost = int(line.split(b"=")[1].split(b" ")[0])
    return tokens, cost


async def added_latency(redis_url: str, n: int = 3_000) -> tuple[list[float], list[float]]:
    """Sequential admit + finish per request (µs): in process, and through Redis (two round trips)."""
    lim = RateLimit(
        id="lat", tenant="acme", scope={"api_key": "fleet"}, requests=10**9, tokens=10**12, concurrent=10**6
    )
    p = plan([lim], {"tenant": "acme", "api_key": "fleet"}, "gpt-4o-mini", 20, 60)
    results = []
    for store in (LocalLimits(), RedisLimits(redis_url)):
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await store.admit(p, f"t{i}")
            await store.finish(p, [(c, c.cost // 2) for c in p.charges], f"t{i}")
            times.append((time.perf_counter() - t0) * 1e6)
        await store.close()
        results.append(times[n // 10 :])  # warm
    return results[0], results[1]


def main(gateways: int = 8, n_clients: int = 1_000, seconds: float = 20.0) -> None:  # noqa: PLR0915 - one run, in order
    if shutil.which("redis-server") is None:
        raise SystemExit("bench_gateway_fleet: apt-get install redis-server")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        broker = start_broker(tmp / "kafka")
        rport = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{rport}/0"
        upstream = ServerThread(MockUpstream(chunk_delay_s=0.02).app()).start()
        procs: list[Proc] = []
        try:
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
            create_topics(settings)
            control = follow(settings)
            writer = ControlWriter(settings, control)
            limit = RateLimit(id="fleet-key", tenant="acme", scope={"api_key": "fleet"}, requests=RPM, tokens=TPM)
            writer.write([("limit", limit.id, limit)], actor="bench", action="create")
            writer.close()
            control.close()
            worst = worst_case_pricer(CachedPriceTable(LayeredPriceTable.from_path()))(
                "gpt-4o-mini", 20, 60, datetime.now(UTC)
            )
            budget_limit = BUDGET_WORST_CASES * worst
            _publish_budget(settings, budget_limit)
            config = tmp / "gateway.yaml"
            gw_config = GatewayConfig(upstream=upstream.url, keys=(KEY, BUDGET_KEY))
            config.write_text(orjson.dumps(gw_config.model_dump(mode="json")).decode())
            urls = []
            for g in range(gateways):
                port = free_port()
                cmd = [sys.executable, "-m", "producers.gateway", "serve", "--config", str(config), "--port", str(port)]
                cmd += ["--redis", redis_url, "--spool", str(tmp / f"spool-{g}.jsonl")]
                procs.append(Proc(cmd, kafka_env(settings), tmp / f"gateway-{g}.log").start())
                urls.append(f"http://127.0.0.1:{port}")
            for p in procs:
                p.wait_log("gateway on http://")
            local, remote = asyncio.run(added_latency(redis_url))  # first, on a quiet machine: no queueing counted
            print(f"{gateways} gateways on one Redis, {n_clients:,} clients (half streaming) for {seconds:.0f} s")
            got = asyncio.run(clients(urls, n_clients, seconds))
            span = got["last"] - got["start"]
            allow_requests = RPM + RPM * span / 60
            allow_tokens = TPM + TPM * span / 60
            r_ratio, t_ratio = got["ok"] / allow_requests, got["tokens"] / allow_tokens
            print(
                f"requests: {got['ok']:,} admitted, {got['limited']:,} rate-limited, {got['budget']:,} over the "
                f"budget, {got['other']} other; allowance over {span:.1f} s {allow_requests:,.0f}: ratio {r_ratio:.4f}"
            )
            print(f"tokens charged: {got['tokens']:,}; allowance {allow_tokens:,.0f}: ratio {t_ratio:.4f}")
            b = got["b"]
            over = max(0, b["cost"] - budget_limit)
            print(
                f"the other key's budget, shared by the fleet: {b['ok']:,} admitted, {b['budget']:,} refused; cost "
                f"{b['cost']:,} of {budget_limit:,} nano-USD ({b['cost'] / budget_limit:.4f}); overshoot {over:,} "
                f"nano-USD = {over / worst:.2f} worst cases; other answers {b['other'] or 'none'}"
            )
            l50, l99 = pct(local, 0.5), pct(local, 0.99)
            r50, r99 = pct(remote, 0.5) / 1000, pct(remote, 0.99) / 1000
            print(
                "added latency per request (admit, then finish: correct + release; sequential): "
                f"in process p50 {l50:.1f} / p99 {l99:.1f} µs; Redis on loopback p50 {r50:.2f} / p99 {r99:.2f} ms"
            )
            overshoot = max(r_ratio, t_ratio, 1.0) - 1
            print(f"gateway limits: overshoot {overshoot * 100:.2f} % over {gateways} replicas, p99 {r99:.2f} ms")
        finally:
            for p in procs:
                p.stop()
            upstream.stop()
            redis.kill()
            broker.stop()


def _publish_budget(settings: KafkaSettings, limit: int) -> None:
    """A normal breaker for the key's budget (what the spend agent would publish), so gateways reserve against it."""
    doc = {
        "budget_id": "fleet-budget",
        "tenant": "acme",
        "scope": {"api_key": "fleet-b"},
        "state": "normal",
        "spent_nanos": 0,
        "limit_nanos": limit,
        "remaining_nanos": limit,
        "warn_nanos": limit * 9 // 10,
        "throttle_nanos": limit * 95 // 100,
        "period": "month",
        "period_key": "bench",
        "period_end": "2099-01-01T00:00:00+00:00",
        "downgrade_model": None,
        "max_tokens_per_request": None,
        "whitelist_features": [],
        "fail_open": False,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    producer = Producer(settings.client_config())
    producer.produce(settings.topics.breakers, orjson.dumps(doc), key=b"fleet-budget")
    producer.flush(10)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]) if a else 8, int(a[1]) if len(a) > 1 else 1_000, float(a[2]) if len(a) > 2 else 20.0)
