"""Gateway rate limits and claims, driven by the genuine OpenAI and Anthropic SDKs and by raw HTTP.

One gateway in process (buckets in process) and fleets of gateways on one real Redis
(``redis-server`` from Debian): headers the SDKs parse, their retries on 429, a streamed
response cut by the client (tokens corrected), claims outside a key's grant (403), the fleet
holding a limit together, a killed gateway's slots lapsing, and Redis going away (each limit
fails open or closed as configured) and coming back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from infra.broker import free_port
from infra.workers import Proc, kafka_env
from producers.gateway.config import GatewayConfig, GatewayKey
from producers.gateway.messages import text_messages
from producers.gateway.mock_upstream import MockUpstream
from producers.gateway.proxy import Gateway
from producers.gateway.redis_limits import LocalLimits, RedisLimits
from producers.gateway.reservations import worst_case_pricer
from producers.gateway.server import ServerThread
from producers.gateway.shared_budgets import SharedBudgets
from producers.publisher import UsagePublisher
from tokenledger.control.follow import follow
from tokenledger.control.log import ControlWriter
from tokenledger.control.records import ApiKey, RateLimit, encode
from tokenledger.control.state import ControlState
from tokenledger.guard import Guard
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.tokens import count_chat_tokens

BREAKER_NOW = "2026-11-10T12:00:00+00:00"


def key(name: str, **grant: Any) -> tuple[str, GatewayKey]:
    token = f"sk-test-{name}"
    return token, GatewayKey(
        name=name, key_sha256=hashlib.sha256(token.encode()).hexdigest(), tenant="acme", department="research", **grant
    )


OPEN_TOKEN, OPEN_KEY = key(
    "open", features=("chat", "incident-response"), exempt_features=("incident-response",), user_from="body"
)
PLAIN_TOKEN, PLAIN_KEY = key("plain", features=("chat", "incident-response"), user_from="body")
FIXED_TOKEN, FIXED_KEY = key("fixed", user_from="key", user="svc-batch")
PROXY_TOKEN, PROXY_KEY = key("proxied", user_from="header")


def broken_budget() -> bytes:
    """A broken budget of department research that whitelists incident-response."""
    limit = 1_000_000_000
    return orjson.dumps(
        {
            "budget_id": "research-broken",
            "tenant": "acme",
            "scope": {"department": "research", "user_id": "incident-user"},
            "state": "broken",
            "spent_nanos": limit,
            "limit_nanos": limit,
            "remaining_nanos": 0,
            "warn_nanos": limit // 2,
            "throttle_nanos": limit * 8 // 10,
            "period": "month",
            "period_key": "2026-11-01T00:00Z",
            "period_end": "2099-12-01T00:00:00+00:00",
            "downgrade_model": None,
            "max_tokens_per_request": None,
            "whitelist_features": ["incident-response"],
            "fail_open": False,
            "updated_at": BREAKER_NOW,
        }
    )


@dataclass
class Rig:
    upstream: ServerThread
    mock: MockUpstream
    gateways: list[Gateway]
    servers: list[ServerThread]
    publisher: UsagePublisher
    control: ControlState

    def url(self, i: int = 0) -> str:
        return self.servers[i].url

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        self.upstream.stop()
        self.publisher.close()


def start(
    kafka: KafkaSettings,
    tmp: Path,
    limits: list[RateLimit],
    make: Any = LocalLimits,
    n: int = 1,
    delay: float = 0.0,
    shared: Any = None,
    breakers: tuple[bytes, ...] = (),
) -> Rig:
    mock = MockUpstream(chunk_delay_s=delay)
    upstream = ServerThread(mock.app()).start()
    table = CachedPriceTable(LayeredPriceTable.from_path())
    control = ControlState.from_records(("limit", lim.id, lim) for lim in limits)
    config = GatewayConfig(upstream=upstream.url, keys=(OPEN_KEY, PLAIN_KEY, FIXED_KEY, PROXY_KEY))
    publisher = UsagePublisher(kafka, spool=tmp / "spool.jsonl")
    gateways, servers = [], []
    for _ in range(n):
        guard = Guard(worst_case_pricer(table), stale_after_s=3600, reservations=shared is None)
        for doc in (broken_budget(), *breakers):
            parsed = orjson.loads(doc)
            guard.apply(parsed, parsed["budget_id"], time.monotonic())
        guard.bootstrapped = True
        gw = Gateway(
            config, guard, publisher, table, limits=make(), control=control, shared=shared() if shared else None
        )
        gateways.append(gw)
        servers.append(ServerThread(gw.app()).start())
    return Rig(upstream, mock, gateways, servers, publisher, control)


@pytest.fixture
def one(kafka: KafkaSettings, tmp_path: Path) -> Iterator[Rig]:
    limits = [
        RateLimit(id="open-rpm", tenant="acme", scope={"api_key": "open"}, requests=60, tokens=20_000),
        RateLimit(
            id="plain-split",
            tenant="acme",
            scope={"api_key": "plain"},
            requests=600,
            input_tokens=50_000,
            output_tokens=4_000,
        ),
    ]
    rig = start(kafka, tmp_path, limits)
    yield rig
    rig.stop()


def post(
    url: str, token: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    async def go() -> tuple[int, dict[str, str], Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, json=body, headers={"Authorization": f"Bearer {token}", **(headers or {})}) as r,
        ):
            raw = await r.read()
            return r.status, dict(r.headers), orjson.loads(raw) if raw.startswith(b"{") else raw

    return asyncio.run(go())


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50}


def test_openai_sdk_reads_the_headers_and_retries_on_429(one: Rig) -> None:
    client = openai.OpenAI(api_key=OPEN_TOKEN, base_url=one.url() + "/v1", max_retries=2)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50, user="u1"
    )
    h = raw.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"], h["x-ratelimit-reset-requests"]) == (
        "60",
        "59",
        "1s",
    )
    assert h["x-ratelimit-limit-tokens"] == "20000" and int(h["x-ratelimit-remaining-tokens"]) < 20_000
    assert int(h["x-tokenledger-cost-nanos"]) > 0 and h["x-tokenledger-price-version"]
    for _ in range(59):  # the rest of the minute's requests
        assert post(one.url() + "/v1/chat/completions", OPEN_TOKEN, CHAT)[0] == 200
    status, headers, body = post(one.url() + "/v1/chat/completions", OPEN_TOKEN, CHAT)
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert headers["Retry-After"] == "1" and 0 < int(headers["retry-after-ms"]) <= 1000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    # The SDK gets the 429, waits what retry-after-ms says, and succeeds on its retry.
    before = one.mock.requests
    t0 = time.monotonic()
    done = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50
    )
    assert done.choices[0].message.content and time.monotonic() - t0 >= 0.5
    assert one.mock.requests == before + 1  # the refused attempt never reached the upstream
    assert one.gateways[0].stats.decisions.get("allow", 0) == 61


def test_anthropic_sdk_on_the_messages_endpoint(one: Rig) -> None:
    client = anthropic.Anthropic(api_key=PLAIN_TOKEN, base_url=one.url(), max_retries=2)
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-0", max_tokens=300, messages=[{"role": "user", "content": "hello"}]
    )
    msg = raw.parse()
    h = raw.headers
    assert msg.usage.output_tokens > 0 and getattr(msg.content[0], "text", None)
    assert h["anthropic-ratelimit-requests-limit"] == "600" and h["anthropic-ratelimit-requests-remaining"] == "599"
    assert h["anthropic-ratelimit-output-tokens-limit"] == "4000"
    # Output tokens are corrected at completion: the reservation of 300 became what was used.
    limiter = one.gateways[0].limits
    assert isinstance(limiter, LocalLimits)
    used = limiter.limiter.usage("plain-split||output_tokens|minute", time.monotonic(), 4_000, 60.0)
    assert msg.usage.output_tokens - 10 <= used <= msg.usage.output_tokens  # it refills at 66.7 tokens/s meanwhile
    # Streaming through the SDK: events parse, the final message carries usage, the stream is priced.
    with client.messages.stream(
        model="claude-sonnet-4-0", max_tokens=200, messages=[{"role": "user", "content": "stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0
    # 4,000 output tokens a minute: a request asking more than what is left is refused, and the SDK retries.
    status, headers, body = post(
        one.url() + "/v1/messages",
        PLAIN_TOKEN,
        {"model": "claude-sonnet-4-0", "max_tokens": 5_000, "messages": [{"role": "user", "content": "x"}]},
    )
    assert status == 429 and body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "more than the 4000 allowed" in body["error"]["message"] and headers["Retry-After"] == "60"


def test_a_stream_cut_by_the_client_gives_back_its_unused_tokens(kafka: KafkaSettings, tmp_path: Path) -> None:
    lim = RateLimit(id="tpm", tenant="acme", scope={"api_key": "open"}, tokens=100_000, concurrent=1)
    rig = start(kafka, tmp_path, [lim], delay=0.05)
    try:
        body = {**CHAT, "stream": True, "max_tokens": 2_000, "metadata": {"mock_output_tokens": 400}}

        async def cut() -> int:
            async with aiohttp.ClientSession() as s:
                r = await s.post(
                    rig.url() + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {OPEN_TOKEN}"}
                )
                assert r.status == 200
                await r.content.readline()  # the first chunk, then the client goes away
                r.close()
            return 0

        asyncio.run(cut())
        limiter = rig.gateways[0].limits
        assert isinstance(limiter, LocalLimits)

        def held() -> int:
            return limiter.limiter.usage("tpm||tokens|minute", time.monotonic(), 100_000, 60.0)

        deadline = time.monotonic() + 10
        while held() > 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held() <= 200  # the prompt and the few tokens streamed, not the 2,000 reserved
        # Its concurrency slot is free again: the next call is admitted at once.
        assert post(rig.url() + "/v1/chat/completions", OPEN_TOKEN, CHAT)[0] == 200
        assert rig.gateways[0].stats.aborted_streams == 1
    finally:
        rig.stop()


def test_claims_outside_the_key_grant_are_refused(one: Rig) -> None:
    url = one.url() + "/v1/chat/completions"
    # A feature the key was not granted: 403, whatever the budget.
    status, _, body = post(url, FIXED_TOKEN, CHAT, {"X-Tokenledger-Feature": "incident-response"})
    assert status == 403 and body["error"]["code"] == "claim_not_granted"
    # The whitelist exemption: the key granted it passes the broken budget, the other is refused by it.
    incident = {**CHAT, "user": "incident-user"}
    assert post(url, OPEN_TOKEN, incident, {"X-Tokenledger-Feature": "incident-response"})[0] == 200
    status, headers, _ = post(url, PLAIN_TOKEN, incident, {"X-Tokenledger-Feature": "incident-response"})
    assert status == 429 and headers["X-Tokenledger-Budget"] == "research-broken"
    # The end user: fixed by the key, or from the authenticating proxy's header; the body cannot change it.
    status, _, body = post(url, FIXED_TOKEN, {**CHAT, "user": "someone-else"})
    assert status == 403 and "is fixed by the key" in body["error"]["message"]
    assert post(url, FIXED_TOKEN, CHAT)[0] == 200
    status, _, _ = post(url, PROXY_TOKEN, {**CHAT, "user": "mallory"}, {"X-Tokenledger-User": "alice"})
    assert status == 403
    assert post(url, PROXY_TOKEN, {**CHAT, "user": "alice"}, {"X-Tokenledger-User": "alice"})[0] == 200
    refused = one.gateways[0].stats.decisions
    assert refused.get("deny", 0) == 1


# -- a fleet on one Redis ---------------------------------------------------------------------------


@dataclass
class Redis:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
                ).stdout.strip()
                == b"PONG"
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("TOKENLEDGER_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required here (apt-get install redis-server)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    r = Redis(free_port(), tmp_path).start()
    yield r
    r.stop()


def burst(urls: list[str], token: str, n: int, body: dict[str, Any] | None = None) -> list[int]:
    async def go() -> list[int]:
        async with aiohttp.ClientSession() as s:

            async def one(i: int) -> int:
                async with s.post(
                    urls[i % len(urls)] + "/v1/chat/completions",
                    json=body or CHAT,
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    await r.read()
                    return r.status

            return list(await asyncio.gather(*(one(i) for i in range(n))))

    return asyncio.run(go())


def test_four_gateways_hold_one_limit_together(kafka: KafkaSettings, tmp_path: Path, redis: Redis) -> None:
    lim = RateLimit(id="fleet", tenant="acme", scope={"api_key": "open"}, requests=40, tokens=100_000)
    rig = start(kafka, tmp_path, [lim], make=lambda: RedisLimits(redis.url), n=4)
    try:
        statuses = burst([rig.url(i) for i in range(4)], OPEN_TOKEN, 200)
        assert statuses.count(200) == 40 and statuses.count(429) == 160  # not 4 x 40
    finally:
        rig.stop()


def test_redis_away_fails_open_or_closed_per_limit_and_comes_back(
    kafka: KafkaSettings, tmp_path: Path, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    limits = [
        RateLimit(id="closed", tenant="acme", scope={"api_key": "open"}, requests=1_000),
        RateLimit(id="opened", tenant="acme", scope={"api_key": "plain"}, requests=1_000, fail_open=True),
    ]
    rig = start(kafka, tmp_path, limits, make=lambda: RedisLimits(redis.url, timeout_s=0.2), n=2)
    try:
        urls = [rig.url(0), rig.url(1)]
        assert burst(urls, OPEN_TOKEN, 10) == [200] * 10
        redis.stop()
        t0 = time.monotonic()
        closed = burst(urls, OPEN_TOKEN, 20)
        opened = burst(urls, PLAIN_TOKEN, 20)
        assert time.monotonic() - t0 < 15  # never a hang: each decision waits at most the timeout
        assert closed == [503] * 20 and opened == [200] * 20
        redis.start()
        deadline = time.monotonic() + 10
        while burst(urls, OPEN_TOKEN, 1) != [200] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert burst(urls, OPEN_TOKEN, 10) == [200] * 10
        said = [r.getMessage() for r in caplog.records if r.name == "tokenledger.gateway.limits"]
        assert (
            len([m for m in said if "unavailable" in m]) <= 2 and len([m for m in said if "back after" in m]) <= 2
        )  # once per gateway
    finally:
        rig.stop()


def test_a_gateway_killed_mid_stream_lets_its_slots_lapse(kafka: KafkaSettings, tmp_path: Path, redis: Redis) -> None:
    """Four gateways on one Redis; A is killed (-9) with two streams in flight, the others recover the limit."""
    lim = RateLimit(id="conc", tenant="acme", scope={"api_key": "open"}, concurrent=2)
    seeded = follow(kafka)
    writer = ControlWriter(kafka, seeded)
    writer.write([("limit", lim.id, lim)], actor="test", action="create")
    writer.close()
    seeded.close()
    mock = MockUpstream(chunk_delay_s=0.2)
    upstream = ServerThread(mock.app()).start()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        orjson.dumps(GatewayConfig(upstream=upstream.url, keys=(OPEN_KEY,)).model_dump(mode="json")).decode()
    )
    env = {**kafka_env(kafka), "TOKENLEDGER_GATEWAY_SLOT_TTL_S": "3"}
    gateways = []
    for name in ("a", "b", "c", "d"):
        port = free_port()
        command = [sys.executable, "-m", "producers.gateway", "serve", "--config", str(config), "--port", str(port)]
        command += ["--redis", redis.url, "--spool", str(tmp_path / f"spool-{name}.jsonl")]
        gateways.append((Proc(command, env, tmp_path / f"gateway-{name}.log").start(), f"http://127.0.0.1:{port}"))
    try:
        for proc, _ in gateways:
            proc.wait_log("gateway on http://")
        (a, a_url), *others = gateways
        b_url = others[0][1]
        slow = {**CHAT, "stream": True, "max_tokens": 500, "metadata": {"mock_output_tokens": 400}}

        async def streams_then_kill() -> None:
            async with aiohttp.ClientSession() as s:
                auth = {"Authorization": f"Bearer {OPEN_TOKEN}"}
                r1 = await s.post(a_url + "/v1/chat/completions", json=slow, headers=auth)
                r2 = await s.post(a_url + "/v1/chat/completions", json=slow, headers=auth)
                assert (r1.status, r2.status) == (200, 200)
                await r1.content.readline()
                a.kill9()  # mid-stream: two slots held in Redis, no release will come
                r1.close()
                r2.close()

        asyncio.run(streams_then_kill())
        status, _, body = post(b_url + "/v1/chat/completions", OPEN_TOKEN, CHAT)
        assert status == 429 and "2 concurrent requests in flight" in body["error"]["message"]
        deadline = time.monotonic() + 10
        while post(b_url + "/v1/chat/completions", OPEN_TOKEN, CHAT)[0] != 200:
            assert time.monotonic() < deadline, "the dead gateway's slots never lapsed"
            time.sleep(0.2)
        # The limit holds across the survivors again: two slots, whichever gateway is asked.
        statuses = burst([url for _, url in others], OPEN_TOKEN, 12, {**CHAT, "stream": True, "max_tokens": 200})
        assert statuses.count(200) == 2 and statuses.count(429) == 10  # streams of ~10 s: none ends meanwhile
    finally:
        for proc, _ in gateways:
            proc.stop()
        upstream.stop()


def test_four_gateways_share_one_budget_without_splitting_it(
    kafka: KafkaSettings, tmp_path: Path, redis: Redis
) -> None:
    """100 concurrent calls over 4 gateways against a budget with room for exactly 10 worst cases: 10 pass.

    A static split (``headroom_share`` 1/4) would let 2 through per gateway (8); no split at all, 10 per
    gateway (40, a 4x overshoot). Shared reservations in Redis admit exactly what fits.
    """
    table = CachedPriceTable(LayeredPriceTable.from_path())
    worst = worst_case_pricer(table)(
        "gpt-4o-mini", count_chat_tokens(text_messages(CHAT["messages"]), "gpt-4o-mini"), 50, datetime.now(UTC)
    )
    doc = orjson.loads(broken_budget())
    limit = 10 * worst
    doc.update(
        budget_id="fleet-budget",
        scope={"api_key": "open"},
        state="normal",
        spent_nanos=0,
        limit_nanos=limit,
        remaining_nanos=limit,
        warn_nanos=limit * 9 // 10,
        throttle_nanos=limit * 95 // 100,
        whitelist_features=[],
        updated_at=datetime.now(UTC).isoformat(),
    )
    rig = start(
        kafka, tmp_path, [], n=4, delay=0.3, shared=lambda: SharedBudgets(redis.url), breakers=(orjson.dumps(doc),)
    )
    try:
        statuses = burst([rig.url(i) for i in range(4)], OPEN_TOKEN, 100, {**CHAT, "stream": True})
        assert statuses.count(200) == 10 and statuses.count(429) == 90
        # Completed: each call's cost (below its worst case) stays counted until a breaker covers it.
        assert sum(g.stats.cost_nanos for g in rig.gateways) <= limit
    finally:
        rig.stop()


def test_gateway_keys_issued_and_revoked_live(kafka: KafkaSettings, tmp_path: Path) -> None:
    """A gateway key of the control plane works at once with its grant, and answers 401 once revoked."""
    rig = start(kafka, tmp_path, [])
    try:
        secret = "sk-tl_live-key"
        live = ApiKey(
            id="key-live1",
            tenant="acme",
            kind="gateway",
            sha256=hashlib.sha256(secret.encode()).hexdigest(),
            department="research",
            features=("chat",),
            user_from="key",
            user="svc-live",
        )
        url = rig.url() + "/v1/chat/completions"
        assert post(url, secret, CHAT)[0] == 401
        rig.control.apply("key/key-live1", encode(live), 100)
        status, headers, _ = post(url, secret, CHAT, {"X-Tokenledger-Feature": "chat"})
        assert status == 200 and headers["X-Tokenledger-Decision"] == "allow"
        assert post(url, secret, {**CHAT, "user": "mallory"})[0] == 403  # its user is fixed by the key
        rig.control.apply("key/key-live1", None, 101)  # revoked
        assert post(url, secret, CHAT)[0] == 401
    finally:
        rig.stop()
