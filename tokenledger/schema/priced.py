"""Priced usage messages (topic ``usage-priced``): what the store sink writes to ``usage_events``.

Internal wire format between the pricing agent and the store sink. Money in integer nano-USD.

* v3 (what the pricing agent sends): the rows as Arrow columns, ``tokenledger.schema.priced_arrow``.
* v2 (earlier releases, still read): ``tlpr2`` batch messages, one stored row per line, a JSON
  array in ``tokenledger.store.records.USAGE_COLUMNS`` order (:class:`PricedRowV2`). The sink
  checks each line's shape and hands the lines to the store as they are
  (``JSONCompactEachRow``).
* v1 (earlier releases, still read): the original event plus its cost, alone in a message or
  one per line of a ``tlpb1`` batch message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from tokenledger.pricing.model import Cost
from tokenledger.schema.fastdecode import FastUsageEvent
from tokenledger.schema.v1 import MAX_TOKENS
from tokenledger.store.records import usage_row

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
PRICED_ROWS_PREFIX = b"tlpr2\n"  # v2: stored rows, one per line
BATCH_BYTES = 900_000  # under the broker's and librdkafka's 1 MB message defaults


def encode_priced_batches(
    items: list[bytes], limit: int = BATCH_BYTES, head: bytes = PRICED_ROWS_PREFIX
) -> list[bytes]:
    """Lines as batch messages of at most ``limit`` bytes each.

    Lines are :func:`encode_row`'s, or v1 :func:`encode_priced`'s with ``head=PRICED_BATCH_PREFIX``.
    """
    out: list[bytes] = []
    part: list[bytes] = []
    size = len(head)
    for item in items:
        if part and size + len(item) + 1 > limit:
            out.append(head + b"\n".join(part))
            part, size = [], len(head)
        part.append(item)
        size += len(item) + 1
    if part:
        out.append(head + b"\n".join(part))
    return out


def priced_items(value: bytes) -> list[bytes]:
    """The priced events of a message: a batch's lines, or the message itself (one event, as before batches)."""
    for prefix in (PRICED_ROWS_PREFIX, PRICED_BATCH_PREFIX):
        if value.startswith(prefix):
            return value[len(prefix) :].split(b"\n")
    return [value]


Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
Nanos = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # Int64 columns


class PricedRowV2(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One ``usage_events`` row, fields in ``USAGE_COLUMNS`` order (a test holds them equal)."""

    source: str
    event_id: str
    request_id: str
    event_time: Annotated[datetime, msgspec.Meta(tz=True)]
    tenant: str
    user_id: str
    department: str
    project: str
    feature: str
    environment: str
    api_key: str
    provider: str
    model: str
    trace_id: str
    span_id: str
    parent_span_id: str
    usage_source: str
    batch: bool
    input_tokens: Count
    output_tokens: Count
    cached_read_tokens: Count
    cache_write_tokens: Count
    reasoning_tokens: Count
    input_nanos: Nanos
    cached_read_nanos: Nanos
    cache_write_nanos: Nanos
    output_nanos: Nanos
    reasoning_nanos: Nanos
    cost_nanos: Nanos
    price_version: str
    flags: list[str]

    @property
    def identity(self) -> tuple[str, str, str]:
        """The idempotency key ``(tenant, source, id)``, as the event's."""
        return (self.tenant, self.source, self.event_id)


_row_decoder = msgspec.json.Decoder(PricedRowV2)


def encode_row(event: FastUsageEvent, cost: Cost) -> bytes:
    """A priced request as one v2 line: its stored row (times as RFC 3339 with their offset)."""
    return _encoder.encode(usage_row(event, cost))


def decode_row(line: bytes) -> PricedRowV2:
    """Check one v2 line (raises ``msgspec.ValidationError``/``DecodeError`` when malformed)."""
    try:
        return _row_decoder.decode(line)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None


def v1_as_row(item: bytes) -> tuple[tuple[str, str, str], bytes]:
    """A v1 priced event as a v2 line, with its identity (raises as :func:`decode_priced`)."""
    priced = decode_priced(item)
    return priced.event.identity, encode_row(priced.event, priced.cost.to_cost())


def priced_rows(value: bytes) -> list[PricedRowV2]:
    """The stored rows of a ``usage-priced`` message of any version (readers and tests; the sink has its own path).

    Raises:
        msgspec.ValidationError, msgspec.DecodeError: A v1/v2 line is malformed.
        tokenledger.schema.priced_arrow.InvalidPricedBatch: A v3 message is.
    """
    from tokenledger.schema.priced_arrow import PRICED_ARROW_PREFIX, arrow_rows, decode_arrow_batch  # noqa: PLC0415 - pyarrow loads only here

    if value.startswith(PRICED_ARROW_PREFIX):
        return [PricedRowV2(**row) for row in arrow_rows(decode_arrow_batch(value))]
    rows_v2 = value.startswith(PRICED_ROWS_PREFIX)
    return [decode_row(item if rows_v2 else v1_as_row(item)[1]) for item in priced_items(value)]
