"""LiteLLM on the real broker: one event per call (sync and async), budgets decided before a call.

LiteLLM answers from ``mock_response`` (no network) and reads its bundled cost map
(``LITELLM_LOCAL_MODEL_COST_MAP``, set before the import).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from litellm.types.utils import ModelResponse, Usage

from producers.events import Attribution, EventFactory, TokenUsage
from producers.litellm import BudgetExceeded, TokenledgerLogger
from producers.publisher import UsagePublisher
from tests.integration.test_stream_pipeline import raw_events, wait_for
from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.guard import Guard
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema import UsageEventV1

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
WHO = Attribution("//svc/litellm", {"tenant": "acme", "environment": "prod"})


def answer(response_id: str, prompt: int, cached: int, completion: int, model: str = "gpt-4o") -> ModelResponse:
    return ModelResponse(
        id=response_id,
        model=model,
        choices=[{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop", "index": 0}],
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details={"cached_tokens": cached},
        ),
    )


LIMIT = 1_000_000_000


def breaker(state: str, budget_id: str, department: str) -> dict[str, Any]:
    return {
        "budget_id": budget_id,
        "tenant": "acme",
        "scope": {"department": department},
        "state": state,
        "spent_nanos": LIMIT if state == "broken" else LIMIT * 6 // 10,
        "limit_nanos": LIMIT,
        "warn_nanos": LIMIT // 2,
        "throttle_nanos": LIMIT * 8 // 10,
        "period_end": "2026-12-01T00:00:00+00:00",
        "updated_at": AT.isoformat(),
        "downgrade_model": "gpt-4o-mini",
        "max_tokens_per_request": 100,
        "whitelist_features": [],
        "fail_open": False,
    }


def test_litellm_calls_publish_once_and_budgets_decide_before_a_call(kafka: KafkaSettings) -> None:
    """SDK calls (sync and async) publish one event each, priced as the producer's; the proxy's
    pre-call hook refuses a broken budget with 429, downgrades a warning one, and an admitted
    call's reservation becomes its priced cost once it succeeds. One logger for the process, as
    LiteLLM keeps one instance of a callback class."""
    table = LayeredPriceTable.from_path()
    guard = Guard(lambda model, prompt, out, now: 1_000 * (prompt + out))
    guard.apply(breaker("broken", "legal-month", "legal"), "legal-month", time.monotonic())
    guard.apply(breaker("warning", "research-month", "research"), "research-month", time.monotonic())
    guard.bootstrapped = True
    before = litellm.callbacks
    with UsagePublisher(kafka) as publisher:
        logger = TokenledgerLogger(
            publisher.publish, WHO, EventFactory(clock=lambda: AT), guard=guard, clock=lambda: AT
        )
        litellm.callbacks = [logger]
        try:
            _sdk_calls(logger)
            _hooked_call(logger, guard)
        finally:
            litellm.callbacks = before
        publisher.flush()
    raw = raw_events(kafka)
    assert sorted(d["data"]["request_id"] for d in raw) == ["chatcmpl-lite-1", "chatcmpl-lite-2", "chatcmpl-lite-3"]
    first = next(d for d in raw if d["data"]["request_id"] == "chatcmpl-lite-1")["data"]
    assert (first["provider"], first["model"], first["input_tokens"], first["cached_read_tokens"]) == (
        "openai",
        "gpt-4o",
        1200,
        200,
    )
    assert first["labels"] == {"tenant": "acme", "environment": "prod", "user": "u-7", "department": "research"}
    # The same priced rows as the equivalent Python producer calls.
    factory = EventFactory(clock=lambda: AT)
    direct = [
        factory.make(WHO, provider="openai", model="gpt-4o", request_id=rid, usage=TokenUsage(inp, 300, cached))
        for rid, inp, cached in (("chatcmpl-lite-1", 1200, 200), ("chatcmpl-lite-2", 900, 0))
    ]
    sdk = [json.dumps(d).encode() for d in raw if d["data"]["request_id"] != "chatcmpl-lite-3"]
    got, want = BatchStats(), BatchStats()
    got_costs = sorted(c.total_nanos for _, c in priced_events(sdk, table, got))
    want_costs = sorted(
        c.total_nanos for _, c in priced_events([e.model_dump_json().encode() for e in direct], table, want)
    )
    assert got_costs == want_costs == [5_250_000, 5_750_000] and got.priced == 2
    (hooked,) = [d for d in raw if d["data"]["request_id"] == "chatcmpl-lite-3"]
    assert (hooked["data"]["model"], hooked["data"]["labels"]["department"]) == ("gpt-4o-mini", "research")
    cost = price(UsageEventV1.model_validate_json(json.dumps(hooked)).data, AT, table).total_nanos
    assert guard.local_nanos("research-month") == (0, cost)  # the reservation became the priced cost


def _sdk_calls(logger: TokenledgerLogger) -> None:
    messages = [{"role": "user", "content": "hi"}]
    litellm.completion(
        model="openai/gpt-4o",
        messages=messages,
        mock_response=answer("chatcmpl-lite-1", 1200, 200, 300),
        user="u-7",
        metadata={"tokenledger": {"department": "research"}},
    )

    async def second() -> None:
        await litellm.acompletion(
            model="gpt-4o", messages=messages, mock_response=answer("chatcmpl-lite-2", 900, 0, 300)
        )
        await asyncio.sleep(0.5)  # LiteLLM runs async success callbacks as tasks

    asyncio.run(second())
    wait_for(lambda: len(logger.published) == 2, 30, "both calls published")  # sync ones on a thread pool


def _hooked_call(logger: TokenledgerLogger, guard: Guard) -> None:
    def ask(department: str) -> dict[str, Any]:
        data = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "summarise the budget"}],
            "max_tokens": 500,
            "metadata": {"tokenledger": {"department": department}},
        }
        return asyncio.run(logger.async_pre_call_hook(None, None, data, "completion"))

    with pytest.raises(BudgetExceeded) as refused:
        ask("legal")
    assert refused.value.status_code == 429 and "legal-month: deny" in str(refused.value)
    data = ask("research")
    assert (data["model"], data["max_tokens"]) == ("gpt-4o-mini", 100)  # downgraded and capped
    assert guard.local_nanos("research-month")[0] > 0  # the worst case is reserved
    litellm.completion(
        model=data["model"],
        messages=data["messages"],
        max_tokens=data["max_tokens"],
        metadata=data["metadata"],
        mock_response=answer("chatcmpl-lite-3", 1000, 0, 100, model=data["model"]),
    )
    wait_for(lambda: "chatcmpl-lite-3" in logger.published, 30, "the call published")
