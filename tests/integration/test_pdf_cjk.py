"""PDF bills draw Chinese names out of the box: the CJK font is a Python dependency, embedded as a subset."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fpdf.fonts import TTFFont

from billing.bill import build_bill
from billing.context import BillingContext
from billing.jobs import BillsIncomplete, generate_monthly_bills
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


def test_chinese_department_and_features_are_drawn(store: ChdbStore) -> None:
    assert cjk_font() is not None and cjk_font().name == "NotoSansCJKjp-Regular.otf"  # type: ignore[union-attr]
    bill = cjk_bill(store)
    pdf = bill_pdf(bill)  # type: ignore[arg-type]
    assert missing_glyphs(pdf, DEPT + "摘要翻译") == ""
    fallback, body = pdf.fonts["fallback"], pdf.fonts["body"]
    assert isinstance(fallback, TTFFont) and isinstance(body, TTFFont)
    for ch in DEPT + "摘要翻译":
        assert ord(ch) not in body.cmap and ord(ch) in fallback.cmap  # drawn by the fallback, not blank
    data = render_pdf(bill)  # type: ignore[arg-type]
    assert data.startswith(b"%PDF-") and b"+NotoSansCJKJP" in data  # the subset is embedded


def test_a_bill_no_font_can_draw_is_refused_with_the_fix(store: ChdbStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENLEDGER_PDF_CJK_FONT", str(Path("/nonexistent/font.ttf")))
    bill = cjk_bill(store)
    with pytest.raises(ConfigError, match="noto-cjk-sans-jp-regular"):
        render_pdf(bill)  # type: ignore[arg-type]


def test_one_bill_that_cannot_be_drawn_does_not_stop_the_others(
    store: ChdbStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no font for 研发中心, its bill fails with the reason and every other bill is written."""
    events = [
        _ev("c1", "2026-10-03T04:00:00Z", dept=DEPT, input_tokens=1000, output_tokens=300),
        _ev("c2", "2026-10-04T04:00:00Z", dept="research", input_tokens=2000, output_tokens=100),
    ]
    ingest_raw(store, events, LayeredPriceTable.from_path())
    monkeypatch.setenv("TOKENLEDGER_PDF_CJK_FONT", "/nonexistent/font.ttf")
    ctx = BillingContext.default(clock=lambda: datetime(2026, 11, 2, tzinfo=UTC))
    with pytest.raises(BillsIncomplete) as caught:
        generate_monthly_bills(store, ctx, "2026-10", tmp_path)
    written = sorted(f"{w.bill.scope.dimension}={w.bill.scope.value}" for w in caught.value.written)
    assert written == ["department=research", "project=copilot", "tenant=acme"]
    assert caught.value.failed == [
        f"acme department={DEPT}: no font for '{''.join(sorted(set(DEPT)))}' in the bill of "
        f"'{DEPT}': reinstall the noto-cjk-sans-jp-regular package or set "
        "TOKENLEDGER_PDF_CJK_FONT to a font that covers them"
    ]
    assert len(list(tmp_path.rglob("*.pdf"))) == 3
