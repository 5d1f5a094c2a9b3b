"""Adapters against genuine SDK objects; streaming estimates and the final figure; spooling."""

from __future__ import annotations

import gc
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message, RawMessageDeltaEvent, RawMessageStartEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from infra.broker import free_port
from producers.adapters import from_anthropic_message, from_dict, from_openai_completion
from producers.events import Attribution, EventFactory, kafka_key
from producers.publisher import UsagePublisher
from producers.streaming import AnthropicStreamTracker, OpenAIStreamTracker
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema import UsageEventV1
from tokenledger.schema.fastdecode import decode_usage_event, encode_usage_event
from tokenledger.tokens import get_encoding

AT = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)
WHO = Attribution(
    "//svc/copilot", {"tenant": "acme", "department": "research", "user": "u1"}, trace_id="t1", span_id="s1"
)
FACTORY = EventFactory(clock=lambda: AT)


def test_openai_completion_sdk_object() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-123",
            "object": "chat.completion",
            "created": 1759654800,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}],
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 1024},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }
    )
    ev = from_openai_completion(completion, WHO, FACTORY)
    d = ev.data
    assert (d.input_tokens, d.cached_read_tokens, d.output_tokens) == (1200, 1024, 300)
    assert (ev.id, d.request_id, d.final, d.usage_source) == ("chatcmpl-123:final", "chatcmpl-123", True, "provider")
    assert ev.time == AT and d.labels.tenant == "acme" and d.trace_id == "t1"
    assert kafka_key(ev) == b"//svc/copilot|chatcmpl-123"
    assert decode_usage_event(encode_usage_event(ev)).identity == ev.identity


def test_anthropic_message_adds_cache_tokens_to_input() -> None:
    msg = Message.model_validate(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 2000,
                "cache_creation_input_tokens": 2000,
                "cache_read_input_tokens": 6000,
                "output_tokens": 800,
            },
        }
    )
    d = from_anthropic_message(msg, WHO, FACTORY).data
    assert (d.input_tokens, d.cached_read_tokens, d.cache_write_tokens, d.output_tokens) == (10_000, 6000, 2000, 800)


def test_generic_dict_gemini_names() -> None:
    rec: dict[str, Any] = {"provider": "google", "model": "gemini-2.5-pro", "request_id": "r9"}
    rec |= {"promptTokenCount": 5000, "candidatesTokenCount": 700, "thoughtsTokenCount": 300}
    d = from_dict(rec, WHO, FACTORY).data
    assert (d.input_tokens, d.output_tokens, d.reasoning_tokens) == (5000, 700, 300)


def _chunk(i: int, text: str | None, usage: dict[str, Any] | None = None) -> ChatCompletionChunk:
    choices = [] if text is None else [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-s",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o",
            "choices": choices,
            "usage": usage,
        }
    )


def test_openai_stream_estimates_then_final_figure() -> None:
    emitted: list[UsageEventV1] = []
    messages = [{"role": "user", "content": "Summarise the contract in three bullet points."}]
    tracker = OpenAIStreamTracker(
        provider="openai",
        model="gpt-4o",
        request_id="chatcmpl-s",
        who=WHO,
        emit=emitted.append,
        prompt_messages=messages,
        estimate_every_tokens=50,
        factory=FACTORY,
    )
    text = "The contract renews yearly, caps liability at fees paid, and allows termination on notice. " * 12
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    for i, piece in enumerate(pieces):
        tracker.on_chunk(_chunk(i, piece))
        # exact at every point of the stream
    whole = len(get_encoding("o200k_base").encode_ordinary(text))
    assert tracker.output_tokens_so_far == whole
    enc = get_encoding("o200k_base")
    expected_prompt = 3 + len(enc.encode("user")) + len(enc.encode(messages[0]["content"])) + 3
    assert tracker.prompt_tokens == expected_prompt == 17
    usage = {"prompt_tokens": 17, "completion_tokens": whole, "total_tokens": 17 + whole}
    tracker.on_chunk(_chunk(len(pieces), None, usage))
    estimates = [e for e in emitted if not e.data.final]
    finals = [e for e in emitted if e.data.final]
    assert len(finals) == 1 and finals[0].data.usage_source == "provider"
    assert (finals[0].data.input_tokens, finals[0].data.output_tokens) == (17, whole)
    assert len(estimates) >= 3 and all(e.data.usage_source == "estimated" for e in estimates)
    assert estimates[0].data.input_tokens == 17  # the chat overhead rule's prompt count
    assert [e.data.stream_seq for e in emitted] == list(range(1, len(emitted) + 1))
    assert len({e.id for e in emitted}) == len(emitted)
    tracker.finish(None)  # idempotent: never a second final event
    assert sum(e.data.final for e in emitted) == 1


def test_aborted_stream_is_billed_from_the_estimate() -> None:
    emitted: list[UsageEventV1] = []
    tracker = OpenAIStreamTracker(
        provider="openai", model="gpt-4o", request_id="r-abort", who=WHO, emit=emitted.append, factory=FACTORY
    )
    tracker.on_chunk(_chunk(0, "Partial answer before the client hung up"))
    final = tracker.finish(None)
    assert final.data.usage_source == "estimated" and final.data.final
    assert final.data.output_tokens == len(
        get_encoding("o200k_base").encode_ordinary("Partial answer before the client hung up")
    )


def test_anthropic_stream_final_from_message_delta() -> None:
    emitted: list[UsageEventV1] = []
    tracker = AnthropicStreamTracker(
        model="claude-sonnet-4-20250514", request_id="msg_s", who=WHO, emit=emitted.append, factory=FACTORY
    )
    start = RawMessageStartEvent.model_validate(
        {
            "type": "message_start",
            "message": {
                "id": "msg_s",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-20250514",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 100,
                    "cache_read_input_tokens": 900,
                    "cache_creation_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        }
    )
    tracker.on_event(start)
    tracker.on_event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello there"}}
    )
    tracker.on_event(
        RawMessageDeltaEvent.model_validate(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 42},
            }
        )
    )
    (final,) = [e for e in emitted if e.data.final]
    assert (final.data.input_tokens, final.data.cached_read_tokens, final.data.output_tokens) == (1000, 900, 42)


class FullProducer:
    """A producer whose local buffer is full for the first ``full`` calls."""

    def __init__(self, full: int) -> None:
        self.full = full
        self.sent: list[tuple[bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        if self.full > 0:
            self.full -= 1
            raise BufferError("queue full")
        self.sent.append((key, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def test_full_buffer_spools_and_close_resends(tmp_path: Path) -> None:
    fake = FullProducer(full=2)
    pub = UsagePublisher(KafkaSettings(), spool=tmp_path / "spool.jsonl", producer=fake)
    events = [
        from_dict(
            {"provider": "openai", "model": "gpt-4o", "request_id": f"r{i}", "input_tokens": 1, "output_tokens": 1},
            WHO,
            FACTORY,
        )
        for i in range(3)
    ]
    for ev in events:
        pub.publish(ev)
    assert pub.stats.spooled == 2 and len(fake.sent) == 1
    pub.close()
    assert pub.stats.resent_from_spool == 2 and len(fake.sent) == 3
    assert sorted(k for k, _ in fake.sent) == sorted(kafka_key(e) for e in events)
    assert not (tmp_path / "spool.jsonl").exists()
    assert {decode_usage_event(v).id for _, v in fake.sent} == {f"r{i}:final" for i in range(3)}


def test_closed_publisher_releases_its_client_and_stays_quiet(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """After close nothing reconnects to a broker that is gone (no log lines twice a second)."""
    nobody = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with UsagePublisher(nobody, spool=tmp_path / "spool.jsonl") as pub:
        pass
    gc.collect()
    capfd.readouterr()
    time.sleep(2.0)
    assert "Connect to" not in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish_raw(b"k", b"{}")
