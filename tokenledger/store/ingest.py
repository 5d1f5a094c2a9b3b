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
    already_stored: int = 0  # requests the store held already (``skip_stored``)


def ingest_raw(
    store: Store,
    lines: Iterable[bytes],
    table: PriceTable,
    batch_size: int = 20_000,
    *,
    skip_stored: bool = False,
) -> IngestStats:
    """Price and insert v1 events; invalid ones are returned with their reason.

    ``skip_stored``: leave out requests whose ``(tenant, source, request_id)`` the store already
    holds (a backfill over a period the stream or an earlier backfill billed), so a request is
    billed once whichever path brought it.
    """
    stats = IngestStats()
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        rows = _unstored(store, batch) if skip_stored else batch
        stats.already_stored += len(batch) - len(rows)
        store.insert("usage_events", USAGE_COLUMNS, rows)
        stats.inserted += len(rows)
        batch.clear()

    for ev, cost in priced_events(lines, table, stats):
        batch.append(usage_row(ev, cost))
        if len(batch) >= batch_size:
            flush()
    flush()
    return stats


_SOURCE, _REQUEST, _TIME, _TENANT = (USAGE_COLUMNS.index(c) for c in ("source", "request_id", "event_time", "tenant"))


def _unstored(store: Store, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows whose request the store does not hold yet (one query over the rows' time span)."""
    if not rows:
        return rows
    times = [r[_TIME] for r in rows]
    found = store.query(
        "SELECT DISTINCT tenant, source, request_id FROM usage_events"
        " WHERE tenant IN {tenants:Array(String)}"
        " AND event_time BETWEEN {lo:DateTime64(6, 'UTC')} AND {hi:DateTime64(6, 'UTC')}",
        {"tenants": sorted({r[_TENANT] for r in rows}), "lo": min(times), "hi": max(times)},
    ).rows
    known = {tuple(r) for r in found}
    return [r for r in rows if (r[_TENANT], r[_SOURCE], r[_REQUEST]) not in known]
