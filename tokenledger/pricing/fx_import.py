"""Daily reference-rate files as FX records (``python -m billing fx import``). Pure.

Reads the European Central Bank's reference-rate CSV, both forms it publishes: the history
(``eurofxref-hist.csv``: ``Date,USD,JPY,...`` with ISO dates and ``N/A`` gaps) and the day's file
(``eurofxref.csv``: ``Date, USD, JPY, ...`` with dates like ``05 January 2024``). ECB rates are
euro-based (1 EUR = r X); a bill converts from USD, so each currency's USD rate is the cross rate
``r(X) / r(USD)`` on the same day, rounded half-to-even to 10 decimal places, and EUR itself is
``1 / r(USD)``. A day without a rate (weekends, holidays, gaps) uses the last rate before it
(:class:`tokenledger.pricing.fx.FxTable`), and the bill names the day of the rate it used.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from tokenledger.control.records import FxDay
from tokenledger.pricing.fx import FxEntry

PLACES = Decimal("1e-10")


def parse_ecb(text: str) -> dict[str, dict[date, Decimal]]:
    """``{currency: {day: euro rate}}`` from an ECB CSV (either form).

    Raises:
        ValueError: Not an ECB reference-rate file (the first problem named).
    """
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0] or rows[0][0].strip() != "Date":
        raise ValueError("not an ECB reference-rate CSV: the first column must be Date")
    header = [h.strip() for h in rows[0]]
    out: dict[str, dict[date, Decimal]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        day = _day(row[0].strip(), n)
        for cur, cell in zip(header[1:], row[1:], strict=False):
            value = cell.strip()
            if not cur or not value or value == "N/A":
                continue
            if len(cur) != 3 or not cur.isalpha() or not cur.isupper():
                raise ValueError(f"line 1: {cur!r} is not a currency code")
            try:
                rate = Decimal(value)
            except InvalidOperation as exc:
                raise ValueError(f"line {n}: {cur} rate {value!r} is not a number") from exc
            if not rate.is_finite() or rate <= 0:
                raise ValueError(f"line {n}: {cur} rate {value!r} must be positive")
            out.setdefault(cur, {})[day] = rate
    if "USD" not in out:
        raise ValueError("the file has no USD column: rates cannot be stated from USD")
    return out


def _day(text: str, line: int) -> date:
    for fmt in ("%Y-%m-%d", "%d %B %Y"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).date()
        except ValueError:
            continue
    raise ValueError(f"line {line}: date {text!r} is neither YYYY-MM-DD nor '05 January 2024'")


def usd_records(euro: dict[str, dict[date, Decimal]], source: str = "ECB") -> list[FxDay]:
    """One record per USD pair and year (EUR included); days without a USD rate are left out."""
    usd = euro["USD"]
    by_key: dict[tuple[str, int], dict[str, str]] = {}
    for day, per_eur in sorted(usd.items()):
        by_key.setdefault(("EUR", day.year), {})[day.isoformat()] = str((1 / per_eur).quantize(PLACES, ROUND_HALF_EVEN))
    for cur, days in euro.items():
        if cur == "USD":
            continue
        for day, rate in sorted(days.items()):
            if day in usd:
                cross = (rate / usd[day]).quantize(PLACES, ROUND_HALF_EVEN)
                by_key.setdefault((cur, day.year), {})[day.isoformat()] = str(cross)
    return [
        FxDay(base="USD", quote=cur, year=year, rates=rates, source=source)
        for (cur, year), rates in sorted(by_key.items())
    ]


def entries_of(records: list[FxDay]) -> list[FxEntry]:
    """The records as effective-dated entries, each day's rate from 00:00 UTC of that day."""
    return [
        FxEntry(
            base=r.base,
            quote=r.quote,
            valid_from=datetime.fromisoformat(day).replace(tzinfo=UTC),
            rate=Decimal(rate),
        )
        for r in records
        for day, rate in sorted(r.rates.items())
    ]
