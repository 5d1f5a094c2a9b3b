"""Dead-letter identity shared by the agents and the sink.

A dead letter is keyed by where its message came from (``topic/partition/offset``). A batch
replayed after a crash before its offsets were committed dead-letters the same message again;
the repeat carries the same key, so readers (and a compacted topic) collapse it.
"""

from __future__ import annotations

import base64
from typing import Any

# A dead letter keeps the first 64 KiB of its value: a 1 MB message written back whole (and a
# binary one grows ~3x as text with replacement characters) would pass the broker's message limit,
# and the dead letter, hence its batch's commit, would never go through.
KEPT_BYTES = 65_536


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
        **value_fields(raw),
    }


def value_fields(raw: bytes) -> dict[str, Any]:
    """The dead letter's copy of a value: at most :data:`KEPT_BYTES` of it, and its full size.

    As ``value`` (text), or for bytes that are not UTF-8 (an Arrow batch, a binary payload) as
    ``value_base64``.
    """
    kept = raw[:KEPT_BYTES]
    try:
        fields: dict[str, Any] = {"value": kept.decode("utf-8")}
    except UnicodeDecodeError as exc:
        if len(raw) > KEPT_BYTES and exc.reason == "unexpected end of data":  # a character cut at the limit
            fields = {"value": kept[: exc.start].decode("utf-8")}
        else:
            fields = {"value_base64": base64.b64encode(kept).decode("ascii")}
    fields["value_bytes"] = len(raw)
    return fields
