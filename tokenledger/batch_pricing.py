"""Price a batch of raw v1 events outside the stream: decode, de-duplicate, price.

The one loop behind the CLI's ``price`` command and direct ingestion (backfills). It bills
what the pricing agent bills, by the same rule (:func:`request_identity`, ``final``): running
estimates of a stream are not billed, and a request is billed once, at the first final figure
seen for its tenant-scoped identity (:func:`tokenledger.identity.request_identity`; a retry
under a new event id is a duplicate). A line is read as the pipeline reads a ``usage-raw``
message: one event (a JSON object) or a batch of them (a JSON array).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgspec

from tokenledger.identity import request_identity
from tokenledger.pricing import PriceTable, price
from tokenledger.pricing.model import Cost
from tokenledger.schema.fastdecode import FastUsageEvent, InvalidEvent, decode_usage_event
from tokenledger.schema.raw_batch import is_batch, split_batch

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


__all__ = ["BatchStats", "events_of", "priced_events", "request_identity"]


def events_of(raw: bytes) -> tuple[list[bytes], str | None]:
    """The events of one ``usage-raw`` message (or JSONL line), or ``([], reason)`` for a broken batch."""
    if not is_batch(raw):
        return [raw], None
    try:
        return split_batch(raw), None
    except (msgspec.DecodeError, ValueError) as exc:
        return [], f"not a batch of events: {exc}"


def priced_events(
    lines: Iterable[bytes], table: PriceTable, stats: BatchStats
) -> Iterator[tuple[FastUsageEvent, Cost]]:
    """Yield the first final event of each request with its cost; count the rest in ``stats``."""
    seen: set[str] = set()
    for line in lines:
        parts, broken = events_of(line)
        if broken is not None:
            stats.read += 1
            stats.invalid.append((line.decode("utf-8", "replace")[:RAW_KEPT_CHARS], broken))
            continue
        for raw in parts:
            stats.read += 1
            yield from _priced_one(raw, table, stats, seen)


def _priced_one(
    raw: bytes, table: PriceTable, stats: BatchStats, seen: set[str]
) -> Iterator[tuple[FastUsageEvent, Cost]]:
    """Price one event unless invalid, an estimate or a duplicate (counted in ``stats``)."""
    try:
        ev = decode_usage_event(raw)
    except InvalidEvent as exc:
        stats.invalid.append((raw.decode("utf-8", "replace")[:RAW_KEPT_CHARS], exc.reason))
        return
    if not ev.data.final:
        stats.estimates += 1
        return
    request = request_identity(ev)
    if request in seen:
        stats.duplicates += 1
        return
    seen.add(request)
    cost = price(ev.data, ev.time, table)
    stats.priced += 1
    stats.total_nanos += cost.total_nanos
    yield ev, cost
