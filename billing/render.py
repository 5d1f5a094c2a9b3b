"""Bill documents finance downloads: JSON (complete), CSV (spreadsheet blocks), PDF (designed)."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import noto_cjk_sans_jp_regular  # type: ignore[import-untyped]  # a font file and its path, no stubs
import orjson
from fpdf import FPDF
from fpdf.fonts import FontFace

from billing.model import Bill
from tokenledger.errors import ConfigError
from tokenledger.money import display_money, units_text

# fpdf2 subsets each PDF's fonts through fontTools, which logs ~75 INFO lines per document.
logging.getLogger("fontTools").setLevel(logging.WARNING)

_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_MAX_BAR_MM = 8.0
# Glyphs DejaVu lacks (Chinese, Japanese, Korean names) come from a fallback font: the
# ``TOKENLEDGER_PDF_CJK_FONT`` file, else Noto Sans CJK, a Python dependency (SIL OFL 1.1; its
# JP cut holds every Pan-CJK glyph, Simplified Chinese included), else Debian's fonts-droid-fallback.
_CJK_FONTS = (
    Path(str(noto_cjk_sans_jp_regular.FONT_PATH)),
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
)
_CJK_HINT = "reinstall the noto-cjk-sans-jp-regular package or set TOKENLEDGER_PDF_CJK_FONT to a font that covers them"
_INK = (33, 37, 41)
_ACCENT = (13, 71, 161)
_MUTED = (108, 117, 125)
_BAND = (232, 240, 254)


def to_plain(value: Any, currency: str) -> Any:
    """JSON-ready form of a bill or report dataclass.

    Every ``*_nanos`` int gains an exact decimal sibling in its unit (``*_usd``, or the
    billing currency for ``*_nanos_local``); Decimals and dates become strings.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            out[f.name] = to_plain(v, currency)
            if isinstance(v, int) and f.name.endswith("_nanos_local"):
                out[f.name.removesuffix("_nanos_local") + f"_{currency.lower()}"] = units_text(v)
            elif isinstance(v, int) and f.name.endswith("_nanos"):
                out[f.name.removesuffix("_nanos") + "_usd"] = units_text(v)
        return out
    if isinstance(value, tuple | list):
        return [to_plain(v, currency) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def bill_to_dict(bill: Bill) -> dict[str, Any]:
    """The whole bill as plain data (ints for nanos, strings for decimals and dates)."""
    doc: dict[str, Any] = to_plain(bill, bill.currency)
    doc["units"] = {
        "*_nanos": "integer nano-USD (1 USD = 1e9)",
        "*_nanos_local": f"integer nano-{bill.currency}",
        "*_usd": "exact decimal USD",
        f"*_{bill.currency.lower()}": f"exact decimal {bill.currency}",
    }
    doc["best_saving_nanos"] = bill.best_saving_nanos
    return doc


def render_json(bill: Bill) -> bytes:
    """JSON document."""
    return orjson.dumps(bill_to_dict(bill), option=orjson.OPT_INDENT_2)


def render_csv(bill: Bill) -> bytes:
    """CSV with one block per section (blank line between), amounts as exact decimals."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    s, cur = bill.summary, bill.currency
    w.writerow(["section", "bill"])
    for k, v in [
        ("tenant", bill.scope.tenant),
        ("scope", f"{bill.scope.dimension}={bill.scope.value}"),
        ("period", bill.period),
        ("timezone", bill.timezone),
        ("rating", bill.rating),
        ("generated_at", bill.generated_at.isoformat()),
    ]:
        w.writerow([k, v])
    w.writerow([])
    w.writerow(["section", "summary"])
    summary_rows: list[tuple[str, object]] = [
        ("requests", s.requests),
        ("input_tokens", s.input_tokens),
        ("output_tokens", s.output_tokens),
        ("cached_read_tokens", s.cached_read_tokens),
        ("cache_write_tokens", s.cache_write_tokens),
        ("reasoning_tokens", s.reasoning_tokens),
        ("cached_ratio", s.cached_ratio),
        ("total_usd", units_text(s.cost_nanos)),
        (f"total_{cur.lower()}", units_text(s.cost_nanos_local)),
        ("avg_cost_per_request_usd", units_text(s.avg_cost_nanos_per_request)),
        ("unknown_model_requests", s.unknown_model_requests),
    ]
    for key, value in summary_rows:
        w.writerow([key, value])
    w.writerow([])
    w.writerow(["section", "by_model"])
    w.writerow(
        [
            "provider",
            "model",
            "requests",
            "input_tokens",
            "output_tokens",
            "cached_read_tokens",
            "cost_usd",
            "share",
        ]
    )
    for m in bill.by_model:
        w.writerow(
            [
                m.provider,
                m.model,
                m.requests,
                m.input_tokens,
                m.output_tokens,
                m.cached_read_tokens,
                units_text(m.cost_nanos),
                m.share,
            ]
        )
    w.writerow([])
    w.writerow(["section", "by_feature"])
    w.writerow(["feature", "requests", "input_tokens", "output_tokens", "cost_usd", "share"])
    for f in bill.by_feature:
        w.writerow([f.feature, f.requests, f.input_tokens, f.output_tokens, units_text(f.cost_nanos), f.share])
    w.writerow([])
    w.writerow(["section", "daily"])
    w.writerow(["day", "requests", "tokens", "cost_usd", f"cost_{cur.lower()}", "fx_rate", "fx_rate_date"])
    for d in bill.daily:
        w.writerow(
            [
                d.day.isoformat(),
                d.requests,
                d.tokens,
                units_text(d.cost_nanos),
                units_text(d.cost_nanos_local),
                d.fx_rate,
                d.fx_rate_date.isoformat() if d.fx_rate_date else "",
            ]
        )
    w.writerow([])
    w.writerow(["section", "top_requests"])
    w.writerow(
        [
            "time",
            "source",
            "event_id",
            "user",
            "model",
            "feature",
            "input_tokens",
            "output_tokens",
            "cost_usd",
        ]
    )
    for t in bill.top_requests:
        w.writerow(
            [
                t.event_time.isoformat(),
                t.source,
                t.event_id,
                t.user_id,
                t.model,
                t.feature,
                t.input_tokens,
                t.output_tokens,
                units_text(t.cost_nanos),
            ]
        )
    w.writerow([])
    w.writerow(["section", "suggestions"])
    w.writerow(["kind", "title", "affected_requests", "saving_usd", "detail"])
    for g in bill.suggestions:
        w.writerow([g.kind, g.title, g.affected_requests, units_text(g.saving_nanos), g.detail])
    return buf.getvalue().encode()


class _BillPdf(FPDF):
    def __init__(self, bill: Bill) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.bill = bill
        if (_FONT_DIR / "DejaVuSans.ttf").exists():
            self.add_font("Body", "", str(_FONT_DIR / "DejaVuSans.ttf"))
            self.add_font("Body", "B", str(_FONT_DIR / "DejaVuSans-Bold.ttf"))
            self.body_font = "Body"
            self.unicode = True
            cjk = cjk_font()
            if cjk is not None:
                self.add_font("Fallback", "", str(cjk))
                self.set_fallback_fonts(["Fallback"], exact_match=False)  # bold text falls back to regular
        else:  # core font: latin-1 only
            self.body_font = "Helvetica"
            self.unicode = False
        self.set_auto_page_break(auto=True, margin=18)
        self.set_margins(15, 15, 15)

    def bill_tz(self) -> ZoneInfo:
        return ZoneInfo(self.bill.timezone)

    def txt(self, text: str) -> str:
        return text if self.unicode else text.encode("latin-1", "replace").decode("latin-1")

    def header(self) -> None:
        self.set_fill_color(*_ACCENT)
        self.rect(0, 0, 210, 6, style="F")
        self.set_y(10)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.body_font, "", 7)
        self.set_text_color(*_MUTED)
        b = self.bill
        self.cell(
            0,
            5,
            self.txt(
                f"tokenledger · {b.scope.tenant} · {b.scope.dimension}={b.scope.value} · {b.period} · "
                f"amounts exact to the nano-dollar, rounded for display · page {self.page_no()}/{{nb}}"
            ),
            align="C",
        )

    def heading(self, text: str) -> None:
        self.ln(3)
        self.set_font(self.body_font, "B", 11)
        self.set_text_color(*_ACCENT)
        self.cell(0, 7, self.txt(text), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(*_ACCENT)
        self.line(self.l_margin, self.get_y(), 210 - self.r_margin, self.get_y())
        self.ln(2)
        self.set_text_color(*_INK)

    def table_rows(self, header: list[str], rows: list[list[str]], widths: tuple[int, ...], right_from: int) -> None:
        self.set_font(self.body_font, "", 8)
        self.set_fill_color(*_BAND)  # the chart leaves its bar colour as the current fill
        self.set_text_color(*_INK)
        aligns = tuple("LEFT" if i < right_from else "RIGHT" for i in range(len(header)))
        with self.table(
            col_widths=widths,
            text_align=aligns,
            headings_style=FontFace(emphasis="BOLD", color=(255, 255, 255), fill_color=_ACCENT),
            cell_fill_color=_BAND,
            cell_fill_mode="ROWS",
            line_height=5,
            borders_layout="NONE",
        ) as table:
            table.row([self.txt(h) for h in header])
            for r in rows:
                table.row([self.txt(c) for c in r])


def _usd(nanos: int) -> str:
    return display_money(nanos, "USD")


def cjk_font() -> Path | None:
    """The fallback font for glyphs the body font lacks, if one is installed."""
    configured = os.environ.get("TOKENLEDGER_PDF_CJK_FONT")
    candidates = (Path(configured),) if configured else _CJK_FONTS
    return next((c for c in candidates if c.is_file()), None)


def missing_glyphs(pdf: FPDF, text: str) -> str:
    """Characters of ``text`` that neither the body font nor a fallback font can draw."""
    fonts = [f for f in pdf.fonts.values() if hasattr(f, "cmap")]
    return "".join(sorted({c for c in text if c.isprintable() and not any(ord(c) in f.cmap for f in fonts)}))


def render_pdf(bill: Bill) -> bytes:
    """A4 PDF: summary cards, spend by model and feature, daily trend chart, top requests, advice.

    Raises:
        ConfigError: The bill names something (e.g. a department 研发中心) that no installed font can draw;
            a bill with blank names is worse than no bill.
    """
    return bytes(bill_pdf(bill).output())


def bill_pdf(bill: Bill) -> FPDF:
    """The laid-out document (``render_pdf`` serialises it); raises like it."""
    pdf = _BillPdf(bill)
    if pdf.unicode:
        lacking = missing_glyphs(pdf, render_json(bill).decode())
        if lacking:
            raise ConfigError(f"no font for {lacking[:20]!r} in the bill of {bill.scope.value!r}: {_CJK_HINT}")
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.set_font(pdf.body_font, "B", 18)
    pdf.set_text_color(*_INK)
    pdf.cell(0, 10, pdf.txt(f"LLM usage bill — {bill.period}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(pdf.body_font, "", 9)
    pdf.set_text_color(*_MUTED)
    pdf.multi_cell(
        0,
        5,
        pdf.txt(
            f"Tenant {bill.scope.tenant} · {bill.scope.dimension}: {bill.scope.value} · "
            f"{bill.period_start.astimezone(pdf.bill_tz()).date()} to "
            f"{(bill.period_end.astimezone(pdf.bill_tz())).date()} (exclusive), {bill.timezone} · "
            f"rating: {bill.rating} · generated {bill.generated_at:%Y-%m-%d %H:%M} UTC"
        ),
    )
    pdf.ln(3)
    _summary_cards(pdf, bill)
    pdf.heading("Spend by model")
    pdf.table_rows(
        ["Provider", "Model", "Requests", "Input tok", "Output tok", "Cost (USD)", "Share"],
        [
            [
                m.provider,
                m.model,
                f"{m.requests:,}",
                f"{m.input_tokens:,}",
                f"{m.output_tokens:,}",
                _usd(m.cost_nanos),
                f"{m.share:.1%}",
            ]
            for m in bill.by_model
        ],
        (22, 48, 18, 24, 24, 26, 18),
        2,
    )
    pdf.heading("Spend by feature")
    pdf.table_rows(
        ["Feature", "Requests", "Input tok", "Output tok", "Cost (USD)", "Share"],
        [
            [
                f.feature,
                f"{f.requests:,}",
                f"{f.input_tokens:,}",
                f"{f.output_tokens:,}",
                _usd(f.cost_nanos),
                f"{f.share:.1%}",
            ]
            for f in bill.by_feature
        ],
        (60, 22, 26, 26, 28, 18),
        1,
    )
    _daily_chart(pdf, bill)
    pdf.heading("Top 10 most expensive requests")
    pdf.table_rows(
        ["Time (UTC)", "Request", "User", "Model", "Feature", "In", "Out", "Cost (USD)"],
        [
            [
                f"{t.event_time:%m-%d %H:%M}",
                t.request_id[:18],
                t.user_id[:12],
                t.model[:22],
                t.feature[:14],
                f"{t.input_tokens:,}",
                f"{t.output_tokens:,}",
                display_money(t.cost_nanos, "USD"),
            ]
            for t in bill.top_requests
        ],
        (20, 30, 18, 34, 22, 18, 14, 24),
        5,
    )
    if pdf.get_y() + _suggestions_height(pdf, bill) > pdf.page_break_trigger and bill.suggestions:
        pdf.add_page()  # the section starts on a page that holds it, never one suggestion alone on the next
    pdf.heading(f"Optimisation suggestions — the best saves ~{_usd(bill.best_saving_nanos)} / month")
    if not bill.suggestions:
        pdf.set_font(pdf.body_font, "", 9)
        pdf.cell(0, 6, pdf.txt("No suggestion: spend patterns look efficient."), new_x="LMARGIN", new_y="NEXT")
    elif len(bill.suggestions) > 1:
        pdf.set_font(pdf.body_font, "", 7)
        pdf.set_text_color(*_MUTED)
        note = "Estimates can overlap on the same requests: do not add them."
        pdf.cell(0, 4, pdf.txt(note), new_x="LMARGIN", new_y="NEXT")
    for g in bill.suggestions:
        pdf.set_font(pdf.body_font, "B", 9)
        pdf.set_text_color(*_INK)
        pdf.multi_cell(0, 5, pdf.txt(f"{g.title} — saves ~{_usd(g.saving_nanos)}"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(pdf.body_font, "", 8)
        pdf.set_text_color(*_MUTED)
        pdf.multi_cell(0, 4, pdf.txt(g.detail), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    return pdf


def _suggestions_height(pdf: _BillPdf, bill: Bill) -> float:
    """Height (mm) of the suggestions section as ``bill_pdf`` lays it out (capped at one page)."""
    total = 3.0 + 7 + 2 + 4
    for g in bill.suggestions:
        pdf.set_font(pdf.body_font, "B", 9)
        title = pdf.multi_cell(
            0, 5, pdf.txt(f"{g.title} — saves ~{_usd(g.saving_nanos)}"), dry_run=True, output="LINES"
        )
        pdf.set_font(pdf.body_font, "", 8)
        detail = pdf.multi_cell(0, 4, pdf.txt(g.detail), dry_run=True, output="LINES")
        total += 5 * len(cast("list[str]", title)) + 4 * len(cast("list[str]", detail)) + 1
    return min(total, 297 - 33)


def _summary_cards(pdf: _BillPdf, bill: Bill) -> None:
    """Five key figures in tinted boxes, then the token breakdown."""
    s, cur = bill.summary, bill.currency
    cards = [
        ("Total (USD)", _usd(s.cost_nanos)),
        (f"Total ({cur})", display_money(s.cost_nanos_local, cur)),
        ("Requests", f"{s.requests:,}"),
        ("Avg per request", display_money(s.avg_cost_nanos_per_request, "USD")),
        ("Cached input", f"{s.cached_ratio:.1%}"),
    ]
    x0, y0, w = pdf.l_margin, pdf.get_y(), (210 - 30 - 4 * 3) / 5
    for i, (label, value) in enumerate(cards):
        x = x0 + i * (w + 3)
        pdf.set_fill_color(*_BAND)
        pdf.rect(x, y0, w, 18, style="F")
        pdf.set_xy(x + 2, y0 + 2)
        pdf.set_font(pdf.body_font, "", 7)
        pdf.set_text_color(*_MUTED)
        pdf.cell(w - 4, 4, pdf.txt(label))
        pdf.set_xy(x + 2, y0 + 8)
        pdf.set_font(pdf.body_font, "B", 10)
        pdf.set_text_color(*_INK)
        pdf.cell(w - 4, 6, pdf.txt(value))
    pdf.set_y(y0 + 22)
    pdf.set_font(pdf.body_font, "", 8)
    pdf.set_text_color(*_MUTED)
    pdf.multi_cell(
        0,
        4,
        pdf.txt(
            f"Tokens: {s.input_tokens:,} input ({s.cached_read_tokens:,} cached read, "
            f"{s.cache_write_tokens:,} cache write), {s.output_tokens:,} output "
            f"({s.reasoning_tokens:,} reasoning). {cur} amounts convert each day at that day's rate. "
            f"Priced with {s.price_versions} price version(s)"
            + (
                f"; {s.unknown_model_requests} request(s) on unknown models at the fallback rate."
                if s.unknown_model_requests
                else "."
            )
        ),
    )


def _daily_chart(pdf: _BillPdf, bill: Bill) -> None:
    pdf.heading("Daily trend (USD)")
    if not bill.daily:
        return
    if pdf.get_y() > 297 - 18 - 50:
        pdf.add_page()
    x0, y0, width, height = pdf.l_margin + 14, pdf.get_y() + 2, 210 - 30 - 14, 36
    peak = max(d.cost_nanos for d in bill.daily) or 1
    n = len(bill.daily)
    slot = width / n
    bar = min(slot - 0.6, _MAX_BAR_MM)  # one day is one ordinary bar, not a block over its label
    pdf.set_font(pdf.body_font, "", 6)
    pdf.set_text_color(*_MUTED)
    pdf.set_xy(pdf.l_margin, y0 - 1)
    pdf.cell(12, 3, pdf.txt(f"max {display_money(peak, 'USD')}"))
    pdf.set_fill_color(*_ACCENT)
    for i, d in enumerate(bill.daily):
        h = height * d.cost_nanos / peak
        pdf.rect(x0 + i * slot + (slot - bar) / 2, y0 + height - h, max(bar, 0.2), h, style="F")
        if n <= 31 and (i % max(1, n // 10) == 0):
            pdf.set_xy(x0 + i * slot, y0 + height + 0.5)
            pdf.cell(slot, 3, pdf.txt(f"{d.day:%d}" if n > 1 else f"{d.day:%Y-%m-%d}"), align="C")
    pdf.set_draw_color(*_MUTED)
    pdf.line(x0, y0 + height, x0 + width, y0 + height)
    pdf.set_fill_color(*_BAND)
    pdf.set_y(y0 + height + 5)
