"""Turn provider SDK objects (or their dict form) into usage events.

Works with the ``openai`` and ``anthropic`` SDK response models and with plain dicts of the
same shape (attribute or key access), so services need not depend on a given SDK version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from producers.events import Attribution, EventFactory, TokenUsage
from tokenledger.schema import UsageEventV1


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _int(obj: Any, name: str) -> int:
    value = _get(obj, name)
    return int(value) if value is not None else 0


def openai_usage(usage: Any) -> TokenUsage:
    """OpenAI ``CompletionUsage``: prompt tokens include cached ones; completion includes reasoning."""
    return TokenUsage(
        input_tokens=_int(usage, "prompt_tokens"),
        output_tokens=_int(usage, "completion_tokens"),
        cached_read_tokens=_int(_get(usage, "prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=_int(_get(usage, "completion_tokens_details"), "reasoning_tokens"),
    )


def anthropic_usage(usage: Any) -> TokenUsage:
    """Anthropic ``Usage``: ``input_tokens`` excludes cache reads and writes, so add them."""
    cache_read = _int(usage, "cache_read_input_tokens")
    cache_write = _int(usage, "cache_creation_input_tokens")
    return TokenUsage(
        input_tokens=_int(usage, "input_tokens") + cache_read + cache_write,
        output_tokens=_int(usage, "output_tokens"),
        cached_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def from_openai_completion(
    completion: Any, who: Attribution, factory: EventFactory | None = None, provider: str = "openai"
) -> UsageEventV1:
    """A final event from a non-streamed ``ChatCompletion``.

    Raises:
        ValueError: The completion carries no usage.
    """
    usage = _get(completion, "usage")
    if usage is None:
        raise ValueError("completion has no usage: cannot bill it from provider figures")
    return (factory or EventFactory()).make(
        who,
        provider=provider,
        model=str(_get(completion, "model")),
        request_id=str(_get(completion, "id")),
        usage=openai_usage(usage),
    )


def from_anthropic_message(message: Any, who: Attribution, factory: EventFactory | None = None) -> UsageEventV1:
    """A final event from an Anthropic ``Message``."""
    return (factory or EventFactory()).make(
        who,
        provider="anthropic",
        model=str(_get(message, "model")),
        request_id=str(_get(message, "id")),
        usage=anthropic_usage(_get(message, "usage")),
    )


# Generic dicts: the first key present wins.
_GENERIC_KEYS = {
    "input_tokens": ("input_tokens", "prompt_tokens", "promptTokenCount"),
    "output_tokens": ("output_tokens", "completion_tokens", "candidatesTokenCount"),
    "cached_read_tokens": ("cached_read_tokens", "cached_tokens", "cache_read_input_tokens", "cachedContentTokenCount"),
    "cache_write_tokens": ("cache_write_tokens", "cache_creation_input_tokens"),
    "reasoning_tokens": ("reasoning_tokens", "thoughtsTokenCount"),
}


def from_dict(record: Mapping[str, Any], who: Attribution, factory: EventFactory | None = None) -> UsageEventV1:
    """A final event from a generic dict with ``provider``, ``model``, ``request_id`` and counts.

    Counts are taken as already normalised (input includes cache reads/writes), under the
    usual names of OpenAI, Anthropic-normalised or Gemini ``usageMetadata``.
    """
    counts = {}
    for ours, names in _GENERIC_KEYS.items():
        counts[ours] = next((int(record[n]) for n in names if record.get(n) is not None), 0)
    return (factory or EventFactory()).make(
        who,
        provider=str(record["provider"]),
        model=str(record["model"]),
        request_id=str(record["request_id"]),
        usage=TokenUsage(**counts),
    )


def chunk_texts(chunk: Any) -> Iterable[str]:
    """Text deltas of an OpenAI ``ChatCompletionChunk``."""
    for choice in _get(chunk, "choices") or ():
        content = _get(_get(choice, "delta"), "content")
        if content:
            yield str(content)
