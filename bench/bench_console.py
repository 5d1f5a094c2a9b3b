"""Console pages over 10 M stored requests (embedded ClickHouse, chdb), through the HTTP server.

Fills ``usage_events`` for October 2026 (tenant acme, Asia/Shanghai) with N synthetic requests
generated inside ClickHouse, 10 % of them in traces; the clock stands at 2026-10-31 12:00 local,
so October 1-30 are closed days and the 31st is live. Then, in one run:

1. every page once with no rollup built (each figure read from ``usage_events FINAL``);
2. the rollup build and the cache warm-up, as the billing service's refresher runs them;
3. every page ``K`` times over HTTP with a bearer token: p50 / p95 per page;
4. exactness: the overview's month total against a plain ``sum`` over FINAL.

Run: ``.venv/bin/python -m bench.bench_console [rows] [K]``. Last line:
``console: p95 N ms over K pages at 10 M events``. Not a timed test.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from bench.synthetic_usage import fill_sql
from billing.context import BillingContext
from billing.http_api import BillingServer
from tokenledger.control.files import DEFAULT_CONTROL, ControlFile
from tokenledger.control.state import ControlState
from tokenledger.money import display_money
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate

FILL = fill_sql(sixth_department="研发中心", traced=True)
PAGES = (
    "overview?month=2026-10",
    "spend?month=2026-10&by=department",
    "spend?month=2026-10&by=project",
    "spend?month=2026-10&by=model",
    "spend?month=2026-10&by=feature",
    "budgets",
    "bills?month=2026-10",
    "allocation?month=2026-10&party=project",
    "advice?month=2026-10",
)


def fetch(url: str) -> tuple[float, str]:
    """Seconds and body of one authorised GET."""
    req = urllib.request.Request(url, headers={"Authorization": "Bearer demo-acme-token"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        body = resp.read().decode()
    return time.perf_counter() - t0, body


def main() -> None:
    """Fill, measure raw, build, measure every page K times."""
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as tmp:
        store = ChdbStore(Path(tmp) / "chdb")
        migrate(store)
        t0 = time.perf_counter()
        store.execute(FILL, {"rows": rows})
        print(f"fill: {rows:,} requests in {time.perf_counter() - t0:.1f} s")
        ctx = BillingContext.default(clock=lambda: datetime(2026, 10, 31, 4, tzinfo=UTC))  # 12:00 in Shanghai
        control = ControlState.from_records(ControlFile.load(DEFAULT_CONTROL).records())
        server = BillingServer(store, ctx, control).start()
        base = f"{server.url}/console/t/acme/"
        raw = {}
        for page in PAGES:
            raw[page], _ = fetch(base + page)
        print(
            "without rollups (every figure from usage_events FINAL): "
            + ", ".join(
                f"{p.split('?')[0]}{'/' + p.split('by=')[1] if 'by=' in p else ''} {raw[p] * 1000:.0f} ms"
                for p in PAGES
            )
        )
        console = server.console
        t0 = time.perf_counter()
        built = console.rollups.refresh("acme", console.tz("acme"), ctx.clock())
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        console.warm("acme")
        t_warm = time.perf_counter() - t0
        print(
            f"rollup build: {built} closed days in {t_build:.1f} s; "
            f"cache warm-up (allocation, tenant bill): {t_warm:.1f} s"
        )
        times: dict[str, list[float]] = {p: [] for p in PAGES}
        body = ""
        for _ in range(k):
            for page in PAGES:
                dt, text = fetch(base + page)
                times[page].append(dt)
                if page.startswith("overview"):
                    body = text
        worst = 0.0
        for page in PAGES:
            ts = sorted(times[page])
            p50, p95 = statistics.median(ts), ts[max(0, round(0.95 * len(ts)) - 1)]
            worst = max(worst, p95)
            print(
                f"{page:42s} p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
                f"(raw {raw[page] * 1000:7.0f} ms, {raw[page] / p50:5.1f}x)"
            )
        total = int(
            store.query(
                "SELECT sum(cost_nanos) FROM usage_events FINAL WHERE tenant = 'acme' "
                "AND toDate(event_time, 'Asia/Shanghai') BETWEEN '2026-10-01' AND '2026-10-31'"
            ).scalar()
        )
        shown = display_money(total, "USD")
        print(
            f"exact: overview shows {shown}, plain SUM over FINAL {total:,} nano-USD -> "
            f"{'equal' if shown in body else 'DIFFERENT'}"
        )
        server.stop()
        store.close()
        print(f"console: p95 {worst * 1000:.0f} ms over {len(PAGES)} pages at {rows / 1e6:g} M events")


if __name__ == "__main__":
    main()
