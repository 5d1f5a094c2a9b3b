"""Spend delta message (topic ``spend-deltas``): one touched key's priced requests from one batch.

Two-phase aggregation. The pricing stage groups each batch of ``usage-raw`` events by what
the spend stage keeps state for: every dimension value (``tenant|dimension=value``) and every
budget (``budget:<id>``) an event falls in. Each key's share of a batch is a delta (v1, below;
alone in a message keyed by its key, as budget change markers still travel), and the pricing
stage sends the deltas of all keys on one partition together (v2, at the end): the spend stage
receives a few messages per batch instead of one per event, and one tenant's keys spread over
all partitions.

Each entry names the raw partition and position it came from (``offset * 65,536 + index`` in
a batch message, see ``tokenledger.schema.raw_batch``). The spend stage remembers, per key and
source partition, the last position it folded in, and skips entries at or below it: a batch
re-priced after a crash (with other boundaries, or partly re-sent) is counted once, entry by
entry. Internal wire format; money in integer nano-USD, times in epoch microseconds (UTC).
"""

from __future__ import annotations

import msgspec

DELTA_TYPE_V1 = "dev.tokenledger.spend-delta.v1"
BUDGET_PREFIX = "budget:"


class SpendDeltaV1(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """One key's share of one batch, entries in offset order within each source partition."""

    type: str
    key: str  # tenant|dimension=value, or budget:<id>
    entries: list[tuple[int, int, int, int]]  # (raw partition, position, event time epoch µs, cost nano-USD)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SpendDeltaV1)


def encode_delta(key: str, entries: list[tuple[int, int, int, int]]) -> bytes:
    """Wire bytes of one key's delta."""
    return _encoder.encode(SpendDeltaV1(DELTA_TYPE_V1, key, entries))


def decode_delta(raw: bytes) -> SpendDeltaV1:
    """Parse and validate a delta.

    Raises:
        msgspec.ValidationError: Wrong shape or type tag.
        msgspec.DecodeError: Not JSON.
    """
    delta = _decoder.decode(raw)
    if delta.type != DELTA_TYPE_V1:
        raise msgspec.ValidationError(f"unknown delta type {delta.type!r}")
    return delta


# v2: the deltas of every key of one batch that lives on one partition of ``spend-deltas``, in
# one message sent to that partition (unkeyed). At a low rate a batch of 50 requests touched
# ~200 keys and made ~200 messages; now it makes one per partition. A key's partition is the
# one its v1 message would go to (Kafka's murmur2 of the key), so a key's deltas and its change
# markers (v1, keyed) still arrive in order on one partition.
DELTAS_TYPE_V2 = "dev.tokenledger.spend-deltas.v2"
_V2_PREFIX = b'["' + DELTAS_TYPE_V2.encode() + b'"'

Entries = list[tuple[int, int, int, int]]


class SpendDeltasV2(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """Several keys' deltas of one batch, all on one partition; each key's entries in order."""

    type: str
    deltas: list[tuple[str, Entries]]


_v2_decoder = msgspec.json.Decoder(SpendDeltasV2)


def encode_deltas(parts: list[tuple[str, Entries]]) -> bytes:
    """Wire bytes of several keys' deltas (one partition's share of a batch)."""
    return _encoder.encode(SpendDeltasV2(DELTAS_TYPE_V2, parts))


def decode_deltas(raw: bytes) -> list[SpendDeltaV1]:
    """The deltas of a message: a v2 message's, or a v1 message's one.

    Raises:
        msgspec.ValidationError: Wrong shape or type tag.
        msgspec.DecodeError: Not JSON.
    """
    if raw.startswith(_V2_PREFIX):
        msg = _v2_decoder.decode(raw)
        return [SpendDeltaV1(DELTA_TYPE_V1, key, entries) for key, entries in msg.deltas]
    return [decode_delta(raw)]
