"""Offline, exact token counting (tiktoken encodings built from packaged BPE data)."""

from tokenledger.tokens.chat import count_chat_tokens
from tokenledger.tokens.encodings import get_encoding
from tokenledger.tokens.models import encoding_name_for_model
from tokenledger.tokens.streaming import StreamingTokenCounter

__all__ = ["StreamingTokenCounter", "count_chat_tokens", "encoding_name_for_model", "get_encoding"]
