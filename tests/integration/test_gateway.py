"""The reference gateway on the real broker, driven by the genuine ``openai`` SDK.

Breaker messages are published to the compacted topic the way the spend agent publishes
them; the gateway bootstraps them, then follows updates: allow, downgrade, 429 with an
OpenAI error body and ``Retry-After``, streaming with running estimates and the provider's
final figure on ``usage-raw``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import openai
import orjson
import pytest
from confluent_kafka import Producer

from producers.breaker_client import BreakerClient
from producers.gateway.config import GatewayConfig
from producers.gateway.mock_upstream import MockUpstream
from producers.gateway.proxy import Gateway
from producers.gateway.reservations import worst_case_pricer
from producers.gateway.server import ServerThread
from producers.publisher import UsagePublisher
from tests.integration.test_stream_pipeline import raw_events
from tokenledger.guard import Guard
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.tokens import count_chat_tokens

SIM_NOW = "2026-11-10T12:00:00+00:00"
LIMIT = 60_000_000_000  # 60 USD


def breaker(budget_id: str, scope: dict[str, str], state: str, spent: int) -> bytes:
    return orjson.dumps(
        {
            "budget_id": budget_id,
            "tenant": "acme",
            "scope": scope,
            "state": state,
            "spent_nanos": spent,
            "limit_nanos": LIMIT,
            "remaining_nanos": max(0, LIMIT - spent),
            "warn_nanos": LIMIT // 2,
            "throttle_nanos": LIMIT * 8 // 10,
            "period": "month",
            "period_key": "2026-11-01T00:00Z",
            "period_end": "2026-12-01T00:00:00+00:00",
            "downgrade_model": "gpt-4o-mini",
            "max_tokens_per_request": 300,
            "whitelist_features": [],
            "fail_open": False,
            "updated_at": SIM_NOW,
        }
    )


@pytest.fixture
def gateway(kafka: KafkaSettings, tmp_path: Any) -> Iterator[tuple[KafkaSettings, Gateway, str, Producer]]:
    producer = Producer(kafka.client_config())
    # Published before the gateway starts: it must bootstrap them from the compacted topic.
    producer.produce(
        kafka.topics.breakers, breaker("copilot", {"project": "copilot"}, "warning", 31 * 10**9), key=b"copilot"
    )
    producer.produce(kafka.topics.breakers, breaker("agents", {"project": "agents"}, "broken", LIMIT), key=b"agents")
    assert producer.flush(10) == 0
    upstream = ServerThread(MockUpstream().app()).start()
    table = CachedPriceTable(LayeredPriceTable.from_path())
    guard = Guard(worst_case_pricer(table), stale_after_s=30)
    client = BreakerClient(kafka, guard).start()
    publisher = UsagePublisher(kafka, spool=tmp_path / "spool.jsonl", record_time="event")
    config = GatewayConfig.load().model_copy(update={"upstream": upstream.url})
    gw = Gateway(config, guard, publisher, table, trust_sim_time=True)
    server = ServerThread(gw.app()).start()
    yield kafka, gw, server.url, producer
    server.stop()
    publisher.close()
    client.close()
    upstream.stop()


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{url}/v1", api_key=key, max_retries=0, default_headers={"X-Tokenledger-Sim-Time": SIM_NOW}
    )


MESSAGES: Any = [
    {"role": "system", "content": "You summarise budgets."},
    {"role": "user", "content": "How much is left?"},
]


def test_gateway_decisions_and_usage_events(gateway: tuple[KafkaSettings, Gateway, str, Producer]) -> None:
    kafka, gw, url, producer = gateway
    prompt = count_chat_tokens(MESSAGES, "gpt-4o")
    assert prompt == count_chat_tokens(MESSAGES, "gpt-4o-mini") == 21

    # Support: no budget in the way -> allowed as asked.
    support = sdk(url, "sk-demo-support-helpdesk")
    raw = support.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=500, user="sup-01", metadata={"mock_output_tokens": "64"}
    )
    done = raw.parse()
    assert raw.headers["x-tokenledger-decision"] == "allow"
    assert done.model == "gpt-4o" and done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (21, 64)

    # Copilot is in warning: downgraded to gpt-4o-mini, max_tokens capped at 300.
    copilot = sdk(url, "sk-demo-research-copilot")
    raw = copilot.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=1000, user="res-03", metadata={"mock_output_tokens": "500"}
    )
    done = raw.parse()
    assert raw.headers["x-tokenledger-decision"] == "downgrade"
    assert done.model == "gpt-4o-mini" and done.usage is not None
    assert done.usage.completion_tokens == 300 and done.choices[0].finish_reason == "length"

    # Agents is broken: HTTP 429, OpenAI error body, Retry-After to the end of November.
    agents = sdk(url, "sk-demo-research-agents")
    with pytest.raises(openai.RateLimitError) as denied:
        agents.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    err = denied.value
    assert err.status_code == 429 and err.code == "budget_exceeded"
    assert err.response.headers["retry-after"] == str(1_771_200 + 1)  # 20.5 days to 1 December, + 1 s
    assert "agents exhausted" in err.message

    # Streaming through the proxy: chunks pass through, usage comes back when asked.
    stream = copilot.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=280,
        stream=True,
        stream_options={"include_usage": True},
        user="res-04",
        extra_headers={"X-Tokenledger-Feature": "chat"},
        metadata={"mock_output_tokens": "270"},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (21, 270)
    assert len(text.split()) >= 200

    # A breaker update arrives: the gateway follows it within a second.
    producer.produce(kafka.topics.breakers, breaker("copilot", {"project": "copilot"}, "broken", LIMIT), key=b"copilot")
    producer.flush(10)
    deadline = time.monotonic() + 10
    while gw.guard.breakers()["copilot"].state != "broken" and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(openai.RateLimitError):
        copilot.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    # usage-raw: one final event per admitted request with the provider's numbers, plus the
    # running estimates of the stream (every 256 tokens), attributed from key, user, feature.
    gw.publisher.flush()  # type: ignore[attr-defined]
    events = raw_events(kafka)
    finals = sorted((e for e in events if e["data"]["final"]), key=lambda e: e["data"]["labels"]["user"])
    assert [(e["data"]["model"], e["data"]["input_tokens"], e["data"]["output_tokens"]) for e in finals] == [
        ("gpt-4o-mini", 21, 300),
        ("gpt-4o-mini", 21, 270),
        ("gpt-4o", 21, 64),
    ]
    assert [e["data"]["labels"]["user"] for e in finals] == ["res-03", "res-04", "sup-01"]
    assert (
        finals[1]["data"]["labels"]["feature"] == "chat"
        and finals[1]["data"]["labels"]["api_key"] == "research-copilot"
    )
    assert all(e["time"].startswith("2026-11-10T12:00:00") for e in events)
    estimates = [e for e in events if not e["data"]["final"]]
    assert [e["data"]["output_tokens"] >= 256 for e in estimates] == [True]
    assert gw.stats.decisions == {"allow": 1, "downgrade": 2, "deny": 2}
    # Prometheus exposition on the gateway itself.
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'tokenledger_gateway_decisions_total{action="deny"} 2.0' in text
    assert "tokenledger_gateway_decision_seconds_count 5.0" in text
    # Reservations were replaced by actual costs (nano-USD), none left in flight.
    assert gw.guard.local_nanos("copilot")[0] == 0
    assert gw.stats.cost_nanos > 0
    assert Decimal(gw.stats.cost_nanos) / 10**9 < Decimal("0.01")


def test_datetime_is_aware() -> None:
    assert datetime.fromisoformat(SIM_NOW).tzinfo == UTC
