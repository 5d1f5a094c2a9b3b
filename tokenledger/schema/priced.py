"""Priced usage message (topic ``usage-priced``): the original v1 event plus its cost.

Internal wire format between the pricing agent and the store sink. Money in integer nano-USD.
"""

from __future__ import annotations

import msgspec

from tokenledger.pricing.model import Cost
from tokenledger.schema.fastdecode import FastUsageEvent

PRICED_TYPE_V1 = "dev.tokenledger.priced.v1"


class PricedCostV1(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Cost components, nano-USD."""

    input_nanos: int
    cached_read_nanos: int
    cache_write_nanos: int
    output_nanos: int
    reasoning_nanos: int
    price_version: str
    flags: list[str] = []

    def to_cost(self) -> Cost:
        """As the domain :class:`Cost`."""
        return Cost(
            self.input_nanos,
            self.cached_read_nanos,
            self.cache_write_nanos,
            self.output_nanos,
            self.reasoning_nanos,
            self.price_version,
            frozenset(self.flags),
        )


class PricedUsageV1(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One priced request."""

    type: str
    event: FastUsageEvent
    cost: PricedCostV1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PricedUsageV1)


def encode_priced(event: FastUsageEvent, cost: Cost) -> bytes:
    """Wire bytes of a priced event."""
    return _encoder.encode(
        PricedUsageV1(
            type=PRICED_TYPE_V1,
            event=event,
            cost=PricedCostV1(
                cost.input_nanos,
                cost.cached_read_nanos,
                cost.cache_write_nanos,
                cost.output_nanos,
                cost.reasoning_nanos,
                cost.price_version,
                sorted(cost.flags),
            ),
        )
    )


def decode_priced(raw: bytes) -> PricedUsageV1:
    """Decode a priced event (raises ``msgspec.ValidationError``/``DecodeError`` when malformed)."""
    try:
        msg = _decoder.decode(raw)
    except UnicodeDecodeError as exc:  # msgspec raises this, not DecodeError, for invalid UTF-8
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
    if msg.type != PRICED_TYPE_V1:
        raise msgspec.ValidationError(f"unexpected type {msg.type!r}")
    return msg


# A batch of priced events in one message: this prefix, then the events' own JSON, one per line
# (JSON text holds no raw newline). One message per ~1,000 requests instead of one per request:
# the broker, the pricing producer and the sink each pay per message.
PRICED_BATCH_PREFIX = b"tlpb1\n"
BATCH_BYTES = 900_000  # under the broker's and librdkafka's 1 MB message defaults


def encode_priced_batches(items: list[bytes], limit: int = BATCH_BYTES) -> list[bytes]:
    """Priced events (from :func:`encode_priced`) as batch messages of at most ``limit`` bytes each."""
    out: list[bytes] = []
    part: list[bytes] = []
    size = len(PRICED_BATCH_PREFIX)
    for item in items:
        if part and size + len(item) + 1 > limit:
            out.append(PRICED_BATCH_PREFIX + b"\n".join(part))
            part, size = [], len(PRICED_BATCH_PREFIX)
        part.append(item)
        size += len(item) + 1
    if part:
        out.append(PRICED_BATCH_PREFIX + b"\n".join(part))
    return out


def priced_items(value: bytes) -> list[bytes]:
    """The priced events of a message: a batch's lines, or the message itself (one event, as before batches)."""
    if value.startswith(PRICED_BATCH_PREFIX):
        return value[len(PRICED_BATCH_PREFIX) :].split(b"\n")
    return [value]
