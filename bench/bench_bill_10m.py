"""Bill generation over 10 M stored requests (embedded ClickHouse, chdb).

Fills ``usage_events`` for October 2026 with 10,000,000 synthetic requests generated inside
ClickHouse (``numbers()``; 6 departments, 12 projects, 8 models, 5,000 users), then times
the billing job: one department bill, one project bill, and all 18 department + project
bills (each bill: summary, breakdowns by project/model/user/feature/day/trace, advice
queries, FX per day). Also times the same month's total as one plain SQL ``sum`` for scale.

Run: ``.venv/bin/python -m bench.bench_bill_10m [rows]``. Not a timed test.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.synthetic_usage import fill_sql
from billing.bill import build_bill
from billing.context import BillingContext
from billing.jobs import generate_monthly_bills
from billing.model import Scope
from billing.periods import month_period
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate

FILL = fill_sql()


def main() -> None:
    """Fill, then time the bills."""
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    with tempfile.TemporaryDirectory() as tmp:
        store = ChdbStore(Path(tmp) / "chdb")
        migrate(store)
        t0 = time.perf_counter()
        store.query(FILL, {"rows": rows})
        fill_s = time.perf_counter() - t0
        n = int(store.query("SELECT count() FROM usage_events").scalar())
        print(f"filled {n:,} requests for October 2026 in {fill_s:.1f} s")
        ctx = BillingContext.default(clock=lambda: datetime(2026, 11, 2, tzinfo=UTC))
        period = month_period("2026-10", ctx.config.tz)
        t0 = time.perf_counter()
        total = store.query(
            "SELECT sum(cost_nanos) FROM usage_events FINAL WHERE tenant = 'acme'",
        ).scalar()
        sum_s = time.perf_counter() - t0
        print(f"plain SQL month total (FINAL): {int(total) / 1e9:,.2f} USD in {sum_s:.2f} s")
        for scope in (Scope("acme", "department", "research"), Scope("acme", "project", "p3")):
            t0 = time.perf_counter()
            bill = build_bill(store, scope, period, ctx)
            took = time.perf_counter() - t0
            print(
                f"bill {scope.dimension}={scope.value}: {bill.summary.requests:,} requests, "
                f"{bill.summary.cost_nanos / 1e9:,.2f} USD in {took:.2f} s ({took / sum_s:.1f}x the plain sum)"
            )
        t0 = time.perf_counter()
        written = generate_monthly_bills(store, ctx, "2026-10", Path(tmp) / "bills")
        took = time.perf_counter() - t0
        print(f"monthly job: {len(written)} bills x JSON/CSV/PDF over {n:,} requests in {took:.1f} s")
        store.close()


if __name__ == "__main__":
    main()
