"""Price a batch of raw v1 events outside the stream: decode, de-duplicate, price.

The one loop behind the CLI's ``price`` command and direct ingestion (backfills). It bills
what the pricing agent bills, by the same rule (:func:`request_identity`, ``final``): running
estimates of a stream are not billed, and a request is billed once, at the first final figure
seen for ``source|request_id`` (a retry under a new event id is a duplicate).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tokenledger.pricing import PriceTable, price
from tokenledger.pricing.model import Cost
from tokenledger.schema.fastdecode import FastUsageEvent, InvalidEvent, decode_usage_event

RAW_KEPT_CHARS = 65_536
"""Longest prefix of an invalid event's text kept with its reason."""


@dataclass
class BatchStats:
    """What a batch contained."""

    read: int = 0
    priced: int = 0
    estimates: int = 0
    duplicates: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (raw text prefix, reason)
    total_nanos: int = 0


def request_identity(ev: FastUsageEvent) -> str:
    """``source|request_id``: what is billed once, in every pricing path."""
    return f"{ev.source}|{ev.data.request_id}"


def priced_events(
    lines: Iterable[bytes], table: PriceTable, stats: BatchStats
) -> Iterator[tuple[FastUsageEvent, Cost]]:
    """Yield the first final event of each request with its cost; count the rest in ``stats``."""
    seen: set[str] = set()
    for raw in lines:
        stats.read += 1
        try:
            ev = decode_usage_event(raw)
        except InvalidEvent as exc:
            stats.invalid.append((raw.decode("utf-8", "replace")[:RAW_KEPT_CHARS], exc.reason))
            continue
        if not ev.data.final:
            stats.estimates += 1
            continue
        request = request_identity(ev)
        if request in seen:
            stats.duplicates += 1
            continue
        seen.add(request)
        cost = price(ev.data, ev.time, table)
        stats.priced += 1
        stats.total_nanos += cost.total_nanos
        yield ev, cost
