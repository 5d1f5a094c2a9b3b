"""Prompt token count of a chat request, with OpenAI's per-message overhead.

The rule is the one in OpenAI's cookbook ("How to count tokens with tiktoken"): every
message costs 3 tokens of framing plus its encoded fields, a ``name`` costs 1 more, and the
reply is primed with 3 tokens. ``gpt-3.5-turbo-0301`` used 4 per message and -1 per name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tokenledger.tokens.encodings import get_encoding
from tokenledger.tokens.models import estimation_encoding_for_model

REPLY_PRIMING_TOKENS = 3


def message_overhead(model: str) -> tuple[int, int]:
    """``(tokens_per_message, tokens_per_name)`` for ``model``."""
    if model.rsplit("/", 1)[-1].lower() == "gpt-3.5-turbo-0301":
        return 4, -1
    return 3, 1


def count_chat_tokens(messages: Iterable[Mapping[str, str]], model: str) -> int:
    """Count the prompt tokens of a chat completion request.

    Args:
        messages: Chat messages; every string field (role, content, name) is counted.
        model: The model name; picks the encoding and the overhead rule.

    Returns:
        The number of prompt tokens the API will bill (exact for OpenAI chat models,
        an o200k estimate for others).
    """
    enc = get_encoding(estimation_encoding_for_model(model)[0])
    per_message, per_name = message_overhead(model)
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += per_message
        for key, value in message.items():
            total += len(enc.encode_ordinary(value))
            if key == "name":
                total += per_name
    return total
