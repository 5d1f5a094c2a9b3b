"""Re-rating: re-price a month's stored requests after a price override changed.

Token counts are the stored facts; prices are looked up again at each event's own time, so
an effective-dated override applies exactly from its ``valid_from``. The result is a rating
run (rows in ``usage_rerated`` under a run id) that bills are generated from, beside the
untouched as-billed rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from billing.periods import Period, day_start
from tokenledger.pricing import PriceTable, UsageRecord, price_with_spec
from tokenledger.pricing.model import Cost
from tokenledger.store.base import Store, load_query
from tokenledger.store.records import USAGE_COLUMNS

RERATED_COLUMNS = ("rating_run", *USAGE_COLUMNS)


@dataclass
class RerateReport:
    """What a re-rating run changed (nano-USD)."""

    run_id: str
    rows: int = 0
    changed_rows: int = 0
    old_total_nanos: int = 0
    new_total_nanos: int = 0
    by_version_change: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    @property
    def delta_nanos(self) -> int:
        """New minus old total."""
        return self.new_total_nanos - self.old_total_nanos


def reprice_row(row: dict[str, Any], table: PriceTable) -> Cost:
    """Price one stored row again at its own event time."""
    usage = UsageRecord(
        str(row["provider"]),
        str(row["model"]),
        int(row["input_tokens"]),
        int(row["output_tokens"]),
        int(row["cached_read_tokens"]),
        int(row["cache_write_tokens"]),
        int(row["reasoning_tokens"]),
        bool(row["batch"]),
    )
    return price_with_spec(usage, table.lookup(usage.provider, usage.model, row["event_time"], batch=usage.batch))


def rerate_period(
    store: Store, tenant: str, period: Period, table: PriceTable, run_id: str, *, batch_size: int = 50_000
) -> RerateReport:
    """Re-price every stored request of ``tenant`` in ``period`` into rating run ``run_id``.

    Reads one calendar day at a time so memory stays bounded. Re-running the same run id
    writes the same rows again, which the table collapses (idempotent).
    """
    report = RerateReport(run_id)
    sql = load_query("rerate_input")
    pending: list[tuple[Any, ...]] = []
    for day in period.days:
        start = max(period.start, day_start(day, period.tz))
        end = min(period.end, day_start(day + timedelta(days=1), period.tz))
        for row in store.query(sql, {"tenant": tenant, "start": start, "end": end}).dicts():
            cost = reprice_row(row, table)
            old = int(row["cost_nanos"])
            report.rows += 1
            report.old_total_nanos += old
            report.new_total_nanos += cost.total_nanos
            if cost.total_nanos != old or cost.price_version != row["price_version"]:
                report.changed_rows += 1
                report.by_version_change[(str(row["price_version"]), cost.price_version)] += cost.total_nanos - old
            new = {
                **row,
                "input_nanos": cost.input_nanos,
                "cached_read_nanos": cost.cached_read_nanos,
                "cache_write_nanos": cost.cache_write_nanos,
                "output_nanos": cost.output_nanos,
                "reasoning_nanos": cost.reasoning_nanos,
                "cost_nanos": cost.total_nanos,
                "price_version": cost.price_version,
                "flags": sorted(cost.flags),
            }
            pending.append((run_id, *(new[c] for c in USAGE_COLUMNS)))
            if len(pending) >= batch_size:
                store.insert("usage_rerated", RERATED_COLUMNS, pending)
                pending = []
    store.insert("usage_rerated", RERATED_COLUMNS, pending)
    return report
