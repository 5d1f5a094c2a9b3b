"""Expiry of remembered identities in a Faust table (pure over a mapping)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

EXPIRE_EVERY = 10_000


def expire_identities(table: MutableMapping[str, Any], partition: int, horizon_s: float) -> int:
    """Forget identities (``[event epoch s, partition, offset]`` values) older than ``horizon_s``.

    Only keys written from ``partition``: a table delete goes to the changelog partition of
    the event being processed, which must be the one that holds the key. Called from inside
    an agent (Faust refuses table writes elsewhere).
    """
    old = [k for k, v in table.items() if v is not None and v[1] == partition and v[0] < horizon_s]
    for key in old:
        del table[key]
    return len(old)


def identity_value(epoch_s: int, partition: int, offset: int) -> list[int]:
    """What an identity table remembers: event time (for expiry) and where the identity was first seen."""
    return [epoch_s, partition, offset]


def is_repeat(remembered: Any, partition: int, offset: int) -> bool:
    """Whether an identity seen before belongs to *another* message (a real duplicate).

    The same message replayed after a crash finds its own identity (same partition and
    offset): that is not a duplicate, its effects are checked record by record instead.
    """
    return remembered is not None and list(remembered[1:3]) != [partition, offset]
