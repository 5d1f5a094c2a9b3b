"""Price a batch of raw v1 events outside the stream: decode, de-duplicate, price.

The one loop behind the CLI's ``price`` command and direct ingestion (backfills).
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
    duplicates: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (raw text prefix, reason)
    total_nanos: int = 0


def priced_events(
    lines: Iterable[bytes], table: PriceTable, stats: BatchStats
) -> Iterator[tuple[FastUsageEvent, Cost]]:
    """Yield each valid event once per ``(source, id)`` with its cost; count the rest in ``stats``."""
    seen: set[tuple[str, str]] = set()
    for raw in lines:
        stats.read += 1
        try:
            ev = decode_usage_event(raw)
        except InvalidEvent as exc:
            stats.invalid.append((raw.decode("utf-8", "replace")[:RAW_KEPT_CHARS], exc.reason))
            continue
        if ev.identity in seen:
            stats.duplicates += 1
            continue
        seen.add(ev.identity)
        cost = price(ev.data, ev.time, table)
        stats.priced += 1
        stats.total_nanos += cost.total_nanos
        yield ev, cost
