"""PDF bills draw Chinese names: glyph coverage checked before rendering, the fallback font embedded."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fpdf.fonts import TTFFont

from billing.bill import build_bill
from billing.context import BillingContext
from billing.model import Scope
from billing.periods import month_period
from billing.render import bill_pdf, cjk_font, missing_glyphs, render_pdf
from tests.billing_fixture import _ev
from tokenledger.errors import ConfigError
from tokenledger.pricing import LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw

DEPT = "研发中心"


def cjk_bill(store: ChdbStore) -> object:
    events = [
        _ev("c1", "2026-10-03T04:00:00Z", dept=DEPT, feature="摘要", input_tokens=1000, output_tokens=300),
        _ev("c2", "2026-10-04T04:00:00Z", dept=DEPT, feature="翻译", input_tokens=2000, output_tokens=100),
    ]
    ingest_raw(store, events, LayeredPriceTable.from_path())
    ctx = BillingContext.default(clock=lambda: datetime(2026, 11, 2, tzinfo=UTC))
    return build_bill(store, Scope("acme", "department", DEPT), month_period("2026-10", ctx.config.tz), ctx)


@pytest.mark.skipif(
    cjk_font() is None and not os.environ.get("TOKENLEDGER_REQUIRE_CJK_FONT"),  # CI installs it and requires it
    reason="no CJK font installed (Debian fonts-droid-fallback)",
)
def test_chinese_department_and_features_are_drawn(store: ChdbStore) -> None:
    bill = cjk_bill(store)
    pdf = bill_pdf(bill)  # type: ignore[arg-type]
    assert missing_glyphs(pdf, DEPT + "摘要翻译") == ""
    fallback, body = pdf.fonts["fallback"], pdf.fonts["body"]
    assert isinstance(fallback, TTFFont) and isinstance(body, TTFFont)
    for ch in DEPT + "摘要翻译":
        assert ord(ch) not in body.cmap and ord(ch) in fallback.cmap  # drawn by the fallback, not blank
    data = render_pdf(bill)  # type: ignore[arg-type]
    assert data.startswith(b"%PDF-") and b"DroidSansFallback" in data  # the subset is embedded


def test_a_bill_no_font_can_draw_is_refused_with_the_fix(store: ChdbStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENLEDGER_PDF_CJK_FONT", str(Path("/nonexistent/font.ttf")))
    bill = cjk_bill(store)
    with pytest.raises(ConfigError, match="fonts-droid-fallback"):
        render_pdf(bill)  # type: ignore[arg-type]
