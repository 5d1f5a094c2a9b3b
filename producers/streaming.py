"""Track a streamed response: running estimates while it streams, one final figure at the end.

The estimates are exact token counts of the text streamed so far (incremental tiktoken
counter) with the prompt counted by the chat overhead rule; they let budgets see in-flight
spend. The final event carries the provider's numbers (OpenAI's last chunk with
``stream_options={"include_usage": True}``, Anthropic's ``message_delta`` usage). The
pipeline bills only the final event, so a request is counted once, at its final figure. A
stream that ends without provider usage (client abort) is billed from the estimate, marked
``usage_source="estimated"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from producers.adapters import _get, anthropic_usage, chunk_texts, openai_usage
from producers.events import Attribution, EventFactory, TokenUsage
from tokenledger.schema import UsageEventV1
from tokenledger.tokens import StreamingTokenCounter, count_chat_tokens, get_encoding
from tokenledger.tokens.models import estimation_encoding_for_model


class StreamTracker:
    """Feed it stream chunks; it calls ``emit`` with estimate events and one final event."""

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        request_id: str,
        who: Attribution,
        emit: Callable[[UsageEventV1], None],
        prompt_messages: Iterable[Mapping[str, str]] = (),
        estimate_every_tokens: int = 256,
        factory: EventFactory | None = None,
    ) -> None:
        self.provider, self.model, self.request_id, self.who = provider, model, request_id, who
        self._emit = emit
        self._factory = factory or EventFactory()
        self._counter = StreamingTokenCounter(get_encoding(estimation_encoding_for_model(model)[0]))
        self.prompt_tokens = count_chat_tokens(list(prompt_messages), model) if prompt_messages else 0
        self._every = estimate_every_tokens
        self._next_estimate = estimate_every_tokens
        self._seq = 0
        self.final: UsageEventV1 | None = None

    @property
    def output_tokens_so_far(self) -> int:
        """Exact tokens of the text streamed so far."""
        return self._counter.count

    def feed_text(self, text: str) -> None:
        """Add streamed text; emit an estimate each ``estimate_every_tokens`` tokens."""
        self._counter.feed(text)
        if self._counter.committed >= self._next_estimate:
            self._seq += 1
            self._next_estimate = self._counter.committed + self._every
            usage = TokenUsage(self.prompt_tokens, self._counter.count)
            self._emit(self._event(usage, estimated=True, final=False))

    def finish(self, provider_usage: TokenUsage | None) -> UsageEventV1:
        """Emit the final event (provider figures, or the estimate when there are none)."""
        if self.final is None:
            usage = provider_usage or TokenUsage(self.prompt_tokens, self._counter.count)
            self._seq += 1
            self.final = self._event(usage, estimated=provider_usage is None, final=True)
            self._emit(self.final)
        return self.final

    def _event(self, usage: TokenUsage, *, estimated: bool, final: bool) -> UsageEventV1:
        return self._factory.make(
            self.who,
            provider=self.provider,
            model=self.model,
            request_id=self.request_id,
            usage=usage,
            estimated=estimated,
            final=final,
            seq=self._seq,
        )


class OpenAIStreamTracker(StreamTracker):
    """For ``ChatCompletionChunk`` streams requested with ``include_usage``."""

    def on_chunk(self, chunk: Any) -> None:
        """Feed one chunk; the chunk that carries ``usage`` finishes the request."""
        for text in chunk_texts(chunk):
            self.feed_text(text)
        usage = _get(chunk, "usage")
        if usage is not None:
            self.finish(openai_usage(usage))


class AnthropicStreamTracker(StreamTracker):
    """For Anthropic message stream events (``message_start`` ... ``message_delta``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(provider="anthropic", **kwargs)
        self._start_usage: Any = None

    def on_event(self, event: Any) -> None:
        """Feed one stream event."""
        kind = _get(event, "type")
        if kind == "message_start":
            self._start_usage = _get(_get(event, "message"), "usage")
        elif kind == "content_block_delta":
            text = _get(_get(event, "delta"), "text")
            if text:
                self.feed_text(str(text))
        elif kind == "message_delta":
            # Output tokens in message_delta are cumulative; input figures come from message_start.
            start = anthropic_usage(self._start_usage) if self._start_usage is not None else TokenUsage(0, 0)
            out = int(_get(_get(event, "usage"), "output_tokens") or 0)
            self.finish(TokenUsage(start.input_tokens, out, start.cached_read_tokens, start.cache_write_tokens))
