"""Direct ingestion (no broker): decode, price and insert raw events in batches.

Used for backfills, the demo's history and tests; the streaming path does the same work
in the pricing agent and the store sink.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tokenledger.pricing import PriceTable, price
from tokenledger.schema.fastdecode import InvalidEvent, decode_usage_event
from tokenledger.store.base import Store
from tokenledger.store.records import USAGE_COLUMNS, usage_row


@dataclass
class IngestStats:
    """What one ingestion did."""

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)
    total_nanos: int = 0


def ingest_raw(store: Store, lines: Iterable[bytes], table: PriceTable, batch_size: int = 20_000) -> IngestStats:
    """Price and insert v1 events; invalid ones are returned with their reason."""
    stats = IngestStats()
    seen: set[tuple[str, str]] = set()
    batch: list[tuple[Any, ...]] = []
    for raw in lines:
        stats.read += 1
        try:
            ev = decode_usage_event(raw)
        except InvalidEvent as exc:
            stats.invalid.append((raw.decode("utf-8", "replace")[:200], exc.reason))
            continue
        if ev.identity in seen:
            stats.duplicates += 1
            continue
        seen.add(ev.identity)
        cost = price(ev.data, ev.time, table)
        stats.total_nanos += cost.total_nanos
        batch.append(usage_row(ev, cost))
        if len(batch) >= batch_size:
            store.insert("usage_events", USAGE_COLUMNS, batch)
            stats.inserted += len(batch)
            batch = []
    store.insert("usage_events", USAGE_COLUMNS, batch)
    stats.inserted += len(batch)
    return stats
