"""LangChain and LiteLLM callbacks: bounded memory, provider ids for streamed calls; OTLP counts; CLI arrays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult

from producers.events import Attribution, Recent
from producers.langchain import TokenledgerCallback
from producers.otlp import Span, usage_event
from tests.factories import event_dict
from tokenledger.cli import price_lines
from tokenledger.schema import UsageEventV1


def test_recent_is_bounded() -> None:
    seen: Recent[int] = Recent(capacity=3)
    assert [seen.add(i) for i in (1, 2, 1, 3, 4)] == [True, True, False, True, True]
    assert list(seen) == [2, 3, 4] and len(seen) == 3


class StreamingOpenAI(GenericFakeChatModel):
    """Streams like ChatOpenAI: chunks without ids, the provider's id in the last chunk's metadata."""

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "openai", "ls_model_name": "gpt-4o", "ls_model_type": "chat"}

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="hel"))
        yield ChatGenerationChunk(message=AIMessageChunk(content="lo"))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata={"input_tokens": 900, "output_tokens": 20, "total_tokens": 920},
                response_metadata={"id": "chatcmpl-stream-1", "model_name": "gpt-4o"},
            )
        )


def test_streamed_langchain_call_keeps_the_provider_id() -> None:
    got: list[UsageEventV1] = []
    handler = TokenledgerCallback(got.append, Attribution("//svc/agent", {"tenant": "acme"}))
    model = StreamingOpenAI(messages=iter([AIMessage(content="unused")]))
    text = "".join(str(c.content) for c in model.stream("hi", config={"callbacks": [handler]}))
    assert text == "hello"
    [event] = got
    assert (event.data.request_id, event.data.input_tokens, event.data.output_tokens) == ("chatcmpl-stream-1", 900, 20)


def test_langchain_callback_memory_is_bounded() -> None:
    got: list[UsageEventV1] = []
    handler = TokenledgerCallback(got.append, Attribution("//svc/agent", {"tenant": "acme"}))
    result = LLMResult(
        generations=[
            [
                ChatGeneration(
                    message=AIMessage(
                        content="x",
                        id="chatcmpl-x",
                        usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
                    )
                )
            ]
        ]
    )
    for _ in range(2_000):
        chain, run = uuid4(), uuid4()
        handler.on_chain_start({}, {}, run_id=chain)
        handler.on_chat_model_start(
            {}, [[]], run_id=run, parent_run_id=chain, metadata={"ls_provider": "openai", "ls_model_name": "gpt-4o"}
        )
        handler.on_llm_end(result, run_id=run, parent_run_id=chain)
        handler.on_chain_end({}, run_id=chain)
    assert len(got) == 2_000
    assert (len(handler._parents), len(handler._runs)) == (0, 0)
    assert len(handler._published) <= 10_000


def _span(**attributes: Any) -> Span:
    return Span(
        "ab" * 16,
        "cd" * 8,
        "",
        1_790_000_000_000_000_000,
        {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", **attributes},
        {},
    )


def test_otlp_token_counts_must_be_integers() -> None:
    assert usage_event(_span(**{"gen_ai.usage.input_tokens": 1200.0}), "acme")["data"]["input_tokens"] == 1200
    for bad in (1200.5, "12x", True, [1]):
        with pytest.raises(ValueError, match="must be an integer"):
            usage_event(_span(**{"gen_ai.usage.input_tokens": bad}), "acme")


def test_price_cli_reads_a_batch_line_as_the_pipeline_does(tmp_path: Path) -> None:
    one = event_dict(request_id="r1")
    two = {**event_dict(request_id="r2"), "id": "evt-2"}
    stats = price_lines(iter([json.dumps([one]).encode(), json.dumps([two, one]).encode()]), tmp_path, "USD")
    assert (stats["priced"], stats["duplicates"], stats["dead_lettered"]) == (2, 1, 0)
