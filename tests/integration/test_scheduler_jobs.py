"""apscheduler triggers in the billing timezone; the monthly job bills last month."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
from apscheduler.schedulers.background import BackgroundScheduler

from billing.context import BillingContext
from billing.scheduler import configure, forecasts_job, monthly_bills_job
from tests.billing_fixture import EVENTS
from tokenledger.budgets import BudgetFile
from tokenledger.pricing import LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw

# 2026-11-01 02:00 in Asia/Shanghai.
CLOSE = datetime(2026, 10, 31, 18, 0, tzinfo=UTC)


def test_triggers_fire_in_billing_timezone(store: ChdbStore, tmp_path: Path) -> None:
    ctx = BillingContext.default(clock=lambda: CLOSE)
    sched = configure(BackgroundScheduler(timezone=ctx.config.tz), store, BudgetFile.load(), ctx, tmp_path)
    bills = sched.get_job("monthly-bills").trigger
    forecasts = sched.get_job("daily-forecasts").trigger
    after = datetime(2026, 10, 15, tzinfo=UTC)
    assert bills.get_next_fire_time(None, after).astimezone(UTC) == CLOSE
    assert forecasts.get_next_fire_time(None, after).astimezone(UTC) == datetime(2026, 10, 15, 22, 0, tzinfo=UTC)


def test_monthly_job_writes_last_months_bills(store: ChdbStore, tmp_path: Path) -> None:
    ingest_raw(store, EVENTS, LayeredPriceTable.from_path())
    ctx = BillingContext.default(clock=lambda: CLOSE)
    monthly_bills_job(store, ctx, tmp_path)()
    folder = tmp_path / "bills" / "acme" / "2026-10"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        f"bill-{dim}-{v}.{ext}"
        for dim, v in [("tenant", "acme"), ("department", "research"), ("department", "sales"), ("project", "copilot")]
        for ext in ("json", "csv", "pdf")
    )
    research = orjson.loads((folder / "bill-department-research.json").read_bytes())
    assert research["summary"]["cost_nanos"] == 1_337_972_500
    project = orjson.loads((folder / "bill-project-copilot.json").read_bytes())
    assert project["summary"]["cost_nanos"] == 1_337_972_500 + 7_500_000  # research + sales
    tenant = orjson.loads((folder / "bill-tenant-acme.json").read_bytes())
    assert tenant["summary"]["cost_nanos"] == 1_337_972_500 + 7_500_000  # the whole company's month
    forecasts_job(store, BudgetFile.load(), ctx, tmp_path)()
    doc = orjson.loads((tmp_path / "forecasts.json").read_bytes())
    assert doc["units"] == "nano-USD"
    assert {f["budget_id"] for f in doc["forecasts"]} == {"acme-research-month", "acme-legal-month"}
