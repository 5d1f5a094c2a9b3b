"""Dead-letter identity shared by the agents and the sink.

A dead letter is keyed by where its message came from (``topic/partition/offset``). A batch
replayed after a crash before its offsets were committed dead-letters the same message again;
the repeat carries the same key, so readers (and a compacted topic) collapse it.
"""

from __future__ import annotations

from typing import Any


def origin_of(message: Any) -> dict[str, Any]:
    """``{topic, partition, offset}`` of a consumed message (Faust or sink ``Message``)."""
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def origin_key(message: Any) -> bytes:
    """The dead letter's key: ``topic/partition/offset`` of its origin."""
    return "{topic}/{partition}/{offset}".format(**origin_of(message)).encode()


def dead_letter_value(stage: str, reason: str, message: Any, raw: bytes) -> dict[str, Any]:
    """A stream agent's dead letter: stage, reason, origin and the value (first 64 KiB, as text)."""
    return {
        "stage": stage,
        "reason": reason,
        "origin": origin_of(message),
        "value": raw.decode("utf-8", "replace")[:65_536],
    }
