"""Re-rating after a price override: exact new bill, the as-billed bill untouched."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from billing.bill import build_bill
from billing.context import BillingContext
from billing.model import Scope
from billing.periods import month_period
from billing.rerate import rerate_period
from tests.billing_fixture import EVENTS, TOTAL_NANOS
from tokenledger.pricing import FxTable, LayeredPriceTable, OverrideBook
from tokenledger.pricing.overrides import OverrideFile
from tokenledger.pricing.table import DEFAULT_OVERRIDES
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw

NOW = datetime(2026, 11, 2, tzinfo=UTC)


def new_prices() -> LayeredPriceTable:
    """The shipped overrides plus a DeepSeek cut effective 2026-10-08 (after e1, before e3)."""
    doc = yaml.safe_load(DEFAULT_OVERRIDES.read_text())
    doc["models"].append(
        {
            "provider": "deepseek",
            "model": "deepseek-chat",
            "valid_from": "2026-10-08T00:00:00+08:00",
            "input_per_mtok": "0.14",
            "cached_read_per_mtok": "0.014",
            "output_per_mtok": "0.21",
        }
    )
    return LayeredPriceTable(OverrideBook.from_model(OverrideFile.model_validate(doc)))


def test_rerate_applies_override_from_valid_from(store: ChdbStore) -> None:
    ingest_raw(store, EVENTS, LayeredPriceTable.from_path())
    ctx = BillingContext.default(clock=lambda: NOW)
    period = month_period("2026-10", ctx.config.tz)
    report = rerate_period(store, "acme", period, new_prices(), "2026-10-r1")
    assert report.rows == 7  # e1-e6 research + e9 sales; e7 is November
    assert report.changed_rows == 1  # only e3 (deepseek, 10-10) falls after the cut
    assert report.delta_nanos == -350_000_000  # 1M x (0.14 + 0.21) instead of (0.28 + 0.42)
    ((change, delta),) = report.by_version_change.items()
    assert change[0].startswith("override:2026-11-22:deepseek/deepseek-chat@2025-09-29")
    assert change[1].startswith("override:2026-11-22:deepseek/deepseek-chat@2026-10-07T16:00Z")
    assert delta == -350_000_000

    scope = Scope("acme", "department", "research")
    rerated = build_bill(store, scope, period, ctx, rating="rerated:2026-10-r1")
    assert rerated.summary.cost_nanos == TOTAL_NANOS - 350_000_000 == 987_972_500
    assert rerated.summary.requests == 6
    assert build_bill(store, scope, period, ctx).summary.cost_nanos == TOTAL_NANOS

    again = rerate_period(store, "acme", period, new_prices(), "2026-10-r1")  # idempotent re-run
    assert again.new_total_nanos == report.new_total_nanos
    assert build_bill(store, scope, period, ctx, rating="rerated:2026-10-r1").summary.cost_nanos == 987_972_500
    assert isinstance(FxTable.from_path(), FxTable)
