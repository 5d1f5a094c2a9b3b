"""A local OpenAI-compatible upstream for demos and tests (``POST /v1/chat/completions``).

It behaves like the real API where billing cares: ``usage.prompt_tokens`` is the tiktoken
count of the prompt with the chat overhead rule; ``completion_tokens`` is the count of the
text it generated (plus hidden reasoning tokens for ``o*`` models); prompt caching follows
OpenAI's rule (a repeated system prompt of >= 1,024 tokens is served from cache in 128-token
steps); ``max_tokens`` / ``max_completion_tokens`` cut the answer (``finish_reason="length"``);
streaming sends ``chat.completion.chunk`` SSE events and, with
``stream_options.include_usage``, a last chunk carrying usage, then ``data: [DONE]``.

The answer length is a deterministic function of the prompt; a caller may pin it with
``metadata.mock_output_tokens`` (demo and tests), and ``metadata.mock_fail`` makes it answer
with that HTTP status.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from producers.gateway.messages import anthropic_error, anthropic_messages, openai_error, text_messages
from tokenledger.http_edge import json_errors
from tokenledger.tokens import count_chat_tokens, get_encoding
from tokenledger.tokens.models import estimation_encoding_for_model

_WORDS = [
    "",
    "the",
    "budget",
    "report",
    "shows",
    "spend",
    "by",
    "project",
    "and",
    "model",
    "for",
    "the",
    "month",
    "with",
    "cache",
    "hits",
    "and",
    "a",
    "forecast",
    "of",
    "the",
    "end",
    "of",
    "month",
    "total",
    "under",
    "the",
    "current",
    "trend",
][1:]
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128


class MockUpstream:
    """State of the mock: the prompt cache."""

    def __init__(self, chunk_delay_s: float = 0.0, words_per_chunk: int = 4) -> None:
        """Create the mock.

        Args:
            chunk_delay_s: Pause between streamed chunks (0 in the demo, realistic values by hand).
            words_per_chunk: Words per streamed chunk.
        """
        self.chunk_delay_s = chunk_delay_s
        self.words_per_chunk = words_per_chunk
        self._cache: set[str] = set()
        self.requests = 0

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[json_errors])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/readyz", self.ready)
        return app

    def _usage(self, body: Mapping[str, Any], messages: list[dict[str, str]], text: str) -> dict[str, Any]:
        model = str(body.get("model", ""))
        prompt = count_chat_tokens(messages, model)
        cached = 0
        if messages and messages[0]["role"] == "system":
            system_tokens = count_chat_tokens(messages[:1], model)
            key = hashlib.sha256(f"{model}\0{messages[0]['content']}".encode()).hexdigest()
            if system_tokens >= CACHE_MIN_TOKENS:
                if key in self._cache:
                    cached = system_tokens // CACHE_STEP * CACHE_STEP
                self._cache.add(key)
        completion = len(get_encoding(estimation_encoding_for_model(model)[0]).encode(text)) if text else 0
        reasoning = completion // 2 * 3 if model.startswith(("o1", "o3", "o4")) else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion + reasoning,
            "total_tokens": prompt + completion + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    @staticmethod
    def _answer(body: Mapping[str, Any], messages: list[dict[str, str]]) -> tuple[str, str]:
        model = str(body.get("model", ""))
        meta = body.get("metadata") or {}
        seed = hashlib.sha256(orjson.dumps(messages)).digest()
        n = int(meta.get("mock_output_tokens", 40 + int.from_bytes(seed[:4], "big") % 560))
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        words = [_WORDS[(seed[i % 32] + i) % len(_WORDS)] for i in range(n)]
        text = "".join(f" {w}" for w in words).lstrip()
        if cap is None:
            return text, "stop"
        # The cap covers hidden reasoning too (reasoning = 1.5 x visible for o* models).
        visible_cap = int(cap) * 2 // 5 if model.startswith(("o1", "o3", "o4")) else int(cap)
        enc = get_encoding(estimation_encoding_for_model(model)[0])
        tokens = enc.encode(text)
        if len(tokens) <= visible_cap:
            return text, "stop"
        return enc.decode(tokens[:visible_cap]), "length"

    async def ready(self, _request: web.Request) -> web.Response:
        """Always ready (a supervisor waits for it)."""
        return web.json_response({"status": "ok"})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        self.requests += 1
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return openai_error(400, "invalid JSON body", "invalid_request_error", None)
        fail = (body.get("metadata") or {}).get("mock_fail")
        if fail:
            return openai_error(int(fail), "mock upstream failure", "server_error", None)
        messages = text_messages(body.get("messages"))
        text, finish = self._answer(body, messages)
        usage = self._usage(body, messages, text)
        rid = f"chatcmpl-{hashlib.sha256(orjson.dumps([messages, time.time_ns()])).hexdigest()[:24]}"
        model = body.get("model", "")
        if not body.get("stream"):
            doc = {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": usage,
            }
            return web.Response(body=orjson.dumps(doc), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        words = text.split(" ") if text else []

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            doc = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            return b"data: " + orjson.dumps(doc) + b"\n\n"

        await resp.write(chunk({"role": "assistant", "content": ""}))
        for i in range(0, len(words), self.words_per_chunk):
            piece = " ".join(words[i : i + self.words_per_chunk])
            await resp.write(chunk({"content": piece if i == 0 else f" {piece}"}))
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await resp.write(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            doc = {"id": rid, "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}
            await resp.write(b"data: " + orjson.dumps(doc) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``: Anthropic's Messages API (unary and its SSE event stream)."""
        self.requests += 1
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return anthropic_error(400, "invalid JSON body")
        fail = (body.get("metadata") or {}).get("mock_fail")
        if fail:
            return anthropic_error(int(fail), "mock upstream failure")
        messages = anthropic_messages(body)
        text, finish = self._answer(body, messages)
        openai = self._usage(body, messages, text)
        cached = openai["prompt_tokens_details"]["cached_tokens"]
        usage = {  # Anthropic counts cache reads apart from input_tokens
            "input_tokens": openai["prompt_tokens"] - cached,
            "output_tokens": openai["completion_tokens"],
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0,
        }
        stop = "end_turn" if finish == "stop" else "max_tokens"
        mid = f"msg_{hashlib.sha256(orjson.dumps([messages, time.time_ns()])).hexdigest()[:24]}"
        message = {"id": mid, "type": "message", "role": "assistant", "model": body.get("model", "")}
        if not body.get("stream"):
            doc = {**message, "content": [{"type": "text", "text": text}], "stop_reason": stop, "usage": usage}
            return web.Response(body=orjson.dumps(doc), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        async def event(name: str, doc: dict[str, Any]) -> None:
            await resp.write(f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **doc}) + b"\n\n")

        start_usage = {**usage, "output_tokens": 1}
        await event("message_start", {"message": {**message, "content": [], "stop_reason": None, "usage": start_usage}})
        await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        words = text.split(" ") if text else []
        for i in range(0, len(words), self.words_per_chunk):
            piece = " ".join(words[i : i + self.words_per_chunk])
            delta = {"type": "text_delta", "text": piece if i == 0 else f" {piece}"}
            await event("content_block_delta", {"index": 0, "delta": delta})
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await event("content_block_stop", {"index": 0})
        await event(
            "message_delta", {"delta": {"stop_reason": stop}, "usage": {"output_tokens": usage["output_tokens"]}}
        )
        await event("message_stop", {})
        await resp.write_eof()
        return resp
