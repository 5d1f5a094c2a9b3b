"""Direct ingestion (no broker): decode, price and insert raw events in batches.

Used for backfills, the demo's history and tests; the streaming path does the same work
in the pricing agent and the store sink.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.pricing import PriceTable
from tokenledger.store.base import Store
from tokenledger.store.records import USAGE_COLUMNS, usage_row


@dataclass
class IngestStats(BatchStats):
    """What one ingestion did."""

    inserted: int = 0


def ingest_raw(store: Store, lines: Iterable[bytes], table: PriceTable, batch_size: int = 20_000) -> IngestStats:
    """Price and insert v1 events; invalid ones are returned with their reason."""
    stats = IngestStats()
    batch: list[tuple[Any, ...]] = []
    for ev, cost in priced_events(lines, table, stats):
        batch.append(usage_row(ev, cost))
        if len(batch) >= batch_size:
            store.insert("usage_events", USAGE_COLUMNS, batch)
            stats.inserted += len(batch)
            batch = []
    store.insert("usage_events", USAGE_COLUMNS, batch)
    stats.inserted += len(batch)
    return stats
