"""Exact bills from a fixed data set on the embedded ClickHouse engine."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest

from billing.bill import build_bill
from billing.context import BillingContext
from billing.model import Scope
from billing.periods import month_period
from billing.render import render_csv, render_json, render_pdf
from tests.billing_fixture import DUPLICATE, EVENTS, TOTAL_NANOS
from tokenledger.money import nanos_to_units
from tokenledger.pricing import LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw

NOW = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def loaded(store: ChdbStore) -> ChdbStore:
    table = LayeredPriceTable.from_path()
    first = ingest_raw(store, EVENTS, table)
    assert first.inserted == 8
    again = ingest_raw(store, [DUPLICATE], table)  # separate block: collapses on FINAL reads
    assert again.inserted == 1
    return store


def test_exact_monthly_bill(loaded: ChdbStore) -> None:
    ctx = BillingContext.default(clock=lambda: NOW)
    bill = build_bill(loaded, Scope("acme", "department", "research"), month_period("2026-10", ctx.config.tz), ctx)
    s = bill.summary
    assert s.requests == 6
    assert s.cost_nanos == TOTAL_NANOS == 1_337_972_500
    assert nanos_to_units(s.cost_nanos) == Decimal("1.3379725")
    assert (s.input_tokens, s.output_tokens, s.cached_read_tokens, s.cache_write_tokens) == (
        1_213_001,
        1_003_600,
        6_600,
        2_000,
    )
    assert s.cached_ratio == Decimal("0.0054")
    assert s.avg_cost_nanos_per_request == 222_995_417  # 1,337,972,500 / 6, half-even
    assert s.unknown_model_requests == 1
    # CNY: each day at 7.0288 (the 2026 rate), rounded per day.
    assert s.cost_nanos_local == 9_404_341_108
    assert (
        s.input_nanos + s.cached_read_nanos + s.cache_write_nanos + s.output_nanos + s.reasoning_nanos == s.cost_nanos
    )

    assert [(m.model, m.cost_nanos) for m in bill.by_model] == [
        ("deepseek-chat", 700_000_000),
        ("gemini-2.5-pro", 515_002_500),
        ("mystery-9000", 90_000_000),
        ("claude-sonnet-4-20250514", 27_300_000),
        ("gpt-4o", 5_250_000),
        ("gpt-4o-mini", 420_000),
    ]
    assert sum(m.cost_nanos for m in bill.by_model) == s.cost_nanos
    assert {f.feature: f.cost_nanos for f in bill.by_feature} == {
        "summarize": 1_310_672_500,
        "review": 27_300_000,
    }
    assert [(d.day, d.cost_nanos) for d in bill.daily] == [
        (date(2026, 10, 1), 420_000),
        (date(2026, 10, 3), 5_250_000),
        (date(2026, 10, 5), 27_300_000),
        (date(2026, 10, 10), 700_000_000),
        (date(2026, 10, 15), 515_002_500),
        (date(2026, 10, 20), 90_000_000),
    ]
    assert [t.event_id for t in bill.top_requests] == ["e3", "e4", "e5", "e2", "e1", "e6"]

    doc = orjson.loads(render_json(bill))
    assert doc["summary"]["cost_nanos"] == 1_337_972_500
    assert doc["summary"]["cost_usd"] == "1.337972500"
    assert doc["summary"]["cost_nanos_local"] == 9_404_341_108
    assert doc["summary"]["cost_cny"] == "9.404341108"
    csv_text = render_csv(bill).decode()
    assert "total_usd,1.337972500" in csv_text
    assert "deepseek,deepseek-chat,1,1000000,1000000,0,0.700000000,0.5232" in csv_text
    pdf = render_pdf(bill)
    assert pdf.startswith(b"%PDF-") and len(pdf) > 5000


def test_other_scopes_and_empty_month(loaded: ChdbStore) -> None:
    ctx = BillingContext.default(clock=lambda: NOW)
    oct_, nov_ = month_period("2026-10", ctx.config.tz), month_period("2026-11", ctx.config.tz)
    sales = build_bill(loaded, Scope("acme", "department", "sales"), oct_, ctx)
    assert sales.summary.cost_nanos == 7_500_000
    nov = build_bill(loaded, Scope("acme", "department", "research"), nov_, ctx)
    assert (nov.summary.requests, nov.summary.cost_nanos) == (1, 7_500_000)
    empty = build_bill(loaded, Scope("other", "department", "research"), oct_, ctx)
    assert empty.summary.requests == 0 and empty.summary.cost_nanos == 0
    assert render_pdf(empty).startswith(b"%PDF-")
    with pytest.raises(ValueError, match="dimension"):
        build_bill(loaded, Scope("acme", "1; DROP TABLE x", "y"), oct_, ctx)
