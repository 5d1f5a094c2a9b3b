"""Count a streamed response chunk by chunk, in linear time, exactly.

Re-encoding the whole text on every chunk is quadratic (an 8k-token answer in 2000 chunks
costs over a second). tiktoken splits text with a regex before BPE, and BPE never crosses a
piece boundary, so a piece that can no longer change can be encoded once and forgotten.
Only the last few pieces can still change when more text arrives (a word grows, trailing
whitespace regroups, ``don`` + ``'t`` merge): we keep ``keep_pieces`` of them uncommitted
and re-scan only that tail. The total always equals encoding the whole text at once.
"""

from __future__ import annotations

import regex
import tiktoken

DEFAULT_KEEP_PIECES = 3


class StreamingTokenCounter:
    """Incremental token counter for one streamed text.

    Example:
        >>> from tokenledger.tokens import get_encoding
        >>> c = StreamingTokenCounter(get_encoding("o200k_base"))
        >>> for chunk in ["Hel", "lo wor", "ld!"]:
        ...     c.feed(chunk)
        >>> c.count
        3
    """

    __slots__ = ("_committed", "_enc", "_keep", "_pattern", "_tail")

    def __init__(self, encoding: tiktoken.Encoding, keep_pieces: int = DEFAULT_KEEP_PIECES) -> None:
        self._enc = encoding
        self._pattern = regex.compile(encoding._pat_str)
        self._keep = keep_pieces
        self._tail = ""
        self._committed = 0

    def feed(self, chunk: str) -> None:
        """Add the next chunk of text."""
        tail = self._tail + chunk
        spans = [m.span() for m in self._pattern.finditer(tail)]
        if len(spans) > self._keep:
            encode = self._enc.encode_ordinary
            # Pieces before the last ``keep`` are final: encode each once. Each piece on its
            # own, not the prefix as one string: a prefix re-split at its new end can regroup
            # (two spaces are one piece at end of text, two pieces before a word).
            self._committed += sum(len(encode(tail[s:e])) for s, e in spans[: -self._keep])
            tail = tail[spans[-self._keep][0] :]
        self._tail = tail

    @property
    def committed(self) -> int:
        """Tokens of the pieces that can no longer change (a lower bound of the count)."""
        return self._committed

    @property
    def count(self) -> int:
        """Exact token count of all text fed so far."""
        return self._committed + len(self._enc.encode_ordinary(self._tail))
