"""The scheduled (and on-demand) billing jobs: monthly bills, forecasts, allocations."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import orjson

from billing.allocation import Method, Span, allocate
from billing.bill import AS_BILLED, build_bill, scoped_query
from billing.context import BillingContext
from billing.forecast_job import BudgetForecast, forecast_budgets, forecast_control
from billing.model import Bill, Scope
from billing.periods import Period, month_period
from billing.render import render_csv, render_json, render_pdf, to_plain
from tokenledger.budgets import BudgetFile
from tokenledger.control.state import ControlState
from tokenledger.errors import ConfigError
from tokenledger.money import nanos_to_units
from tokenledger.store.base import Store, load_query

BILL_DIMENSIONS = ("tenant", "department", "project")  # the tenant bill: the whole company's month


@dataclass(frozen=True)
class WrittenBill:
    """A bill and the files written for it."""

    bill: Bill
    paths: tuple[Path, ...]


def bill_scopes(store: Store, period: Period, dimension: str, tenant: str | None = None) -> list[Scope]:
    """Every (tenant, value) of ``dimension`` with spend in the period."""
    rows = store.query(load_query("scopes"), {"dim": dimension, "start": period.start, "end": period.end}).rows
    return [Scope(str(t), dimension, str(v)) for t, v in rows if tenant is None or t == tenant]


def write_bill(bill: Bill, out_dir: Path) -> WrittenBill:
    """Write JSON, CSV and PDF under ``out_dir/<tenant>/<month>/``."""
    folder = out_dir / file_part(bill.scope.tenant) / bill.period
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"bill-{bill.scope.dimension}-{file_part(bill.scope.value)}"
    if bill.rating != AS_BILLED:
        stem += "-" + file_part(bill.rating)
    paths = []
    for ext, render in (("json", render_json), ("csv", render_csv), ("pdf", render_pdf)):
        path = folder / f"{stem}.{ext}"
        path.write_bytes(render(bill))
        paths.append(path)
    return WrittenBill(bill, tuple(paths))


def file_part(text: str, limit: int = 80) -> str:
    """``text`` as one file-name component, injectively: two values never share a file name.

    RFC 3986 unreserved characters stay; anything else (``/``, spaces, CJK) is percent-encoded,
    so ``ml/platform`` -> ``ml%2Fplatform`` stays apart from ``ml_platform``. A name longer
    than ``limit`` keeps its start plus a hash of the whole value.
    """
    encoded = quote(text, safe="")
    if encoded in ("", ".", ".."):  # not usable as names; a lone "%" is never an output of quote()
        encoded = "%" + encoded.replace(".", "%2E")
    if len(encoded) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        encoded = f"{encoded[: limit - 17]}~{digest}"
    return encoded


def generate_monthly_bills(
    store: Store,
    ctx: BillingContext,
    month: str,
    out_dir: Path,
    tenant: str | None = None,
    *,
    ctx_of: Callable[[str], BillingContext] | None = None,
) -> list[WrittenBill]:
    """The tenant bill and the bills per department and per project for ``month`` (the scheduled job's body).

    ``ctx_of`` gives each tenant's context (its timezone: the month's bounds; its currency).
    Scopes are found over the month widened by a day each side (any timezone's month lies in
    it); a scope without usage in its own tenant's month gets no bill.
    """
    wide = month_period(month, ctx.config.tz)
    search = replace(wide, start=wide.start - timedelta(days=1), end=wide.end + timedelta(days=1))
    written = []
    failed: list[str] = []
    for dimension in BILL_DIMENSIONS:
        for scope in bill_scopes(store, search if ctx_of else wide, dimension, tenant):
            own = ctx_of(scope.tenant) if ctx_of is not None else ctx
            bill = build_bill(store, scope, month_period(month, own.config.tz), own)
            if bill.summary.requests or ctx_of is None:
                try:
                    written.append(write_bill(bill, out_dir))
                except (ConfigError, LookupError) as exc:  # one bill's problem never stops the others
                    failed.append(f"{scope.tenant} {scope.dimension}={scope.value}: {exc}")
    if failed:
        raise BillsIncomplete(written, failed)
    return written


class BillsIncomplete(ConfigError):
    """Some bills could not be written; ``written`` holds the others, all on disk."""

    def __init__(self, written: list[WrittenBill], failed: list[str]) -> None:
        super().__init__(f"{len(failed)} bill(s) not written ({len(written)} written): " + "; ".join(failed))
        self.written, self.failed = written, failed


def run_forecasts(
    store: Store, budgets: BudgetFile | ControlState, ctx: BillingContext, out_dir: Path
) -> list[BudgetForecast]:
    """Forecast every monthly budget and write ``forecasts.json`` (control-plane budgets: each in its tenant's zone)."""
    results = (
        forecast_budgets(store, budgets, ctx)
        if isinstance(budgets, BudgetFile)
        else forecast_control(store, budgets, ctx)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "generated_at": ctx.clock().isoformat(),
        "units": "nano-USD",
        "forecasts": [to_plain(r, "USD") for r in results],
    }
    (out_dir / "forecasts.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return results


def allocation_for_month(
    store: Store, ctx: BillingContext, tenant: str, month: str, *, method: Method, party: str = "project"
) -> tuple[int, dict[str, int]]:
    """Split the month's traced spend of ``tenant`` across ``party`` values.

    Returns:
        ``(amount_nanos, {party value: nanos})``; the values sum exactly to the amount.
    """
    spans = month_spans(store, ctx, tenant, month, party)
    amount = sum(s.cost_nanos for s in spans)
    return amount, allocate(amount, spans, method) if spans else {}


def month_spans(store: Store, ctx: BillingContext, tenant: str, month: str, party: str) -> list[Span]:
    """The traced spans of ``tenant``'s month (in its timezone), each owned by its ``party`` value."""
    if party not in ("project", "department", "source"):
        raise ValueError("party must be project, department or source")
    period = month_period(month, ctx.config.tz)
    rows = scoped_query(store, "trace_spans", AS_BILLED, {"tenant": tenant, "start": period.start, "end": period.end})
    return [
        Span(
            str(r["trace_id"]),
            str(r["span_id"]),
            str(r["parent_span_id"]),
            str(r[party]) or "(none)",
            int(r["cost_nanos"]),
        )
        for r in rows
    ]


def allocation_csv(amount: int, split: dict[str, int], method: str, party: str) -> bytes:
    """CSV of a split, with exact USD and the check total."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([party, "method", "cost_nanos_usd", "cost_usd"])
    for name, nanos in split.items():
        w.writerow([name, method, nanos, nanos_to_units(nanos)])
    w.writerow(["TOTAL", method, sum(split.values()), nanos_to_units(amount)])
    return buf.getvalue().encode()
