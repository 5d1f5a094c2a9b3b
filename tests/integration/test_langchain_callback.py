"""LangChain callback on the real broker: one event per call from provider usage, retries not double counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

from producers.events import Attribution, EventFactory, TokenUsage
from producers.langchain import TokenledgerCallback
from producers.publisher import UsagePublisher
from tests.integration.test_stream_pipeline import raw_events
from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class FakeOpenAIChat(GenericFakeChatModel):
    """A chat model that answers from a list and says it is OpenAI's gpt-4o (as ChatOpenAI does).

    Its first call fails, as a timed-out provider call would: LangChain's retry makes a second run.
    """

    failures_left: int = 1

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "openai", "ls_model_name": "gpt-4o", "ls_model_type": "chat"}

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures_left:
            self.failures_left -= 1
            raise TimeoutError("provider timed out")
        return super()._generate(*args, **kwargs)


def answers() -> Iterator[AIMessage]:
    usage = {
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_tokens": 1500,
        "input_token_details": {"cache_read": 200},
    }
    yield AIMessage(content="a", id="chatcmpl-1", usage_metadata=usage, response_metadata={"model_name": "gpt-4o"})
    yield AIMessage(
        content="b",
        id="chatcmpl-2",
        usage_metadata={**usage, "input_tokens": 900},
        response_metadata={"model_name": "gpt-4o"},
    )


def test_one_event_per_call_and_retries_once(kafka: KafkaSettings) -> None:
    who = Attribution("//svc/agent", {"tenant": "acme", "department": "research"})
    with UsagePublisher(kafka) as publisher:
        handler = TokenledgerCallback(publisher.publish, who, EventFactory(clock=lambda: AT))
        model = FakeOpenAIChat(messages=answers())
        attempts = {"n": 0}

        def flaky(text: str) -> str:
            attempts["n"] += 1
            if attempts["n"] == 1:
                raise TimeoutError("first attempt times out")  # LangChain retries the step
            return text

        chain = RunnableLambda(flaky).with_retry(stop_after_attempt=2) | model.with_retry(stop_after_attempt=2)
        chain.invoke("question one", config={"callbacks": [handler]})  # both steps fail once, then succeed
        model.invoke("question two", config={"callbacks": [handler]})
        publisher.flush()
    raw = raw_events(kafka)
    assert sorted(d["data"]["request_id"] for d in raw) == ["chatcmpl-1", "chatcmpl-2"]  # no double count
    first = next(d for d in raw if d["data"]["request_id"] == "chatcmpl-1")["data"]
    assert (first["provider"], first["model"], first["input_tokens"], first["cached_read_tokens"]) == (
        "openai",
        "gpt-4o",
        1200,
        200,
    )
    assert first["trace_id"] != first["span_id"] != first["parent_span_id"]  # chain -> retry -> model run
    assert first["labels"] == {"tenant": "acme", "department": "research"}
    # The same priced rows as the equivalent Python producer calls.
    factory = EventFactory(clock=lambda: AT)
    direct = [
        factory.make(who, provider="openai", model="gpt-4o", request_id=rid, usage=TokenUsage(inp, 300, 200))
        for rid, inp in (("chatcmpl-1", 1200), ("chatcmpl-2", 900))
    ]
    table = LayeredPriceTable.from_path()
    got, want = BatchStats(), BatchStats()
    got_costs = sorted(c.total_nanos for _, c in priced_events([json.dumps(d).encode() for d in raw], table, got))
    want_costs = sorted(
        c.total_nanos for _, c in priced_events([e.model_dump_json().encode() for e in direct], table, want)
    )
    assert got_costs == want_costs and got.priced == 2
    assert want_costs == [5_000_000, 5_750_000]  # (900 - 200) x 2.50 + 200 x 1.25 + 300 x 10; 1000 x 2.50 + ...
