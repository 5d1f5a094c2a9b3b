"""apscheduler wiring: cron-like triggers in the billing timezone for the billing jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from billing.context import BillingContext, live_fx
from billing.jobs import BillsIncomplete, generate_monthly_bills, run_forecasts
from billing.periods import previous_month
from tokenledger.budgets import BudgetFile
from tokenledger.control.state import ControlState
from tokenledger.store.base import Store

log = logging.getLogger(__name__)


def monthly_bills_job(
    store: Store, ctx: BillingContext, out_dir: Path, control: ControlState | None = None
) -> Callable[[], None]:
    """The job closing last month: bills per department and project (each tenant in its timezone and currency)."""

    def run() -> None:
        month = previous_month(ctx.clock(), ctx.config.tz)
        try:
            written = generate_monthly_bills(store, ctx, month, out_dir / "bills", ctx_of=tenant_contexts(ctx, control))
        except BillsIncomplete as exc:
            log.error("monthly bills for %s: %s", month, exc)
            written = exc.written
        log.info("monthly bills for %s: %d scopes", month, len(written))

    return run


def tenant_contexts(ctx: BillingContext, control: ControlState | None) -> Callable[[str], BillingContext]:
    """A tenant's billing context: its control-plane timezone and currency (the file's without a control plane)."""

    def of(tenant: str) -> BillingContext:
        if control is None:
            return ctx
        t = control.tenant(tenant)
        return live_fx(ctx, control).for_tenant(t.timezone, t.currency)

    return of


def forecasts_job(
    store: Store, budgets: BudgetFile | ControlState, ctx: BillingContext, out_dir: Path
) -> Callable[[], None]:
    """The daily month-end forecast of every monthly budget (the control plane's as of the run)."""

    def run() -> None:
        results = run_forecasts(store, budgets, ctx, out_dir)
        log.info("forecasts: %d budgets", len(results))

    return run


def configure(
    scheduler: BaseScheduler, store: Store, budgets: BudgetFile | ControlState, ctx: BillingContext, out_dir: Path
) -> BaseScheduler:
    """Add the jobs: bills at 02:00 on the 1st, forecasts daily at 06:00 (billing timezone).

    ``coalesce`` and a grace time make a job missed during downtime run once on restart.
    """
    tz = ctx.config.tz
    scheduler.add_job(
        monthly_bills_job(store, ctx, out_dir, budgets if isinstance(budgets, ControlState) else None),
        CronTrigger(day=1, hour=2, minute=0, timezone=tz),
        id="monthly-bills",
        coalesce=True,
        misfire_grace_time=6 * 3600,
        max_instances=1,
        replace_existing=True,
    )
    scheduler.add_job(
        forecasts_job(store, budgets, ctx, out_dir),
        CronTrigger(hour=6, minute=0, timezone=tz),
        id="daily-forecasts",
        coalesce=True,
        misfire_grace_time=3600,
        max_instances=1,
        replace_existing=True,
    )
    return scheduler


def run_blocking(store: Store, budgets: BudgetFile, ctx: BillingContext, out_dir: Path) -> None:
    """Run the scheduler in the foreground until interrupted."""
    sched = configure(BlockingScheduler(timezone=ctx.config.tz), store, budgets, ctx, out_dir)
    sched.start()
