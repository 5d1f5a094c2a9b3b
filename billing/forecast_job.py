"""Month-end forecasts for every budget with a calendar-month period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from billing.bill import scoped_query
from billing.context import BillingContext
from billing.forecast import Backtest, Forecast, backtest, forecast_month
from billing.periods import day_start, month_period
from tokenledger.budgets import Budget, BudgetFile
from tokenledger.control.state import ControlState
from tokenledger.store.base import Store

HISTORY_DAYS = 90


@dataclass(frozen=True)
class BudgetForecast:
    """A budget's month-end forecast and the model's backtest on its history."""

    budget_id: str
    tenant: str
    scope: dict[str, str]
    month: str
    forecast: Forecast
    backtest: Backtest | None


def daily_series(store: Store, budget: Budget, tz_name: str, start: datetime, end: datetime) -> list[tuple[date, int]]:
    """Stored daily spend (nano-USD) of the budget's scope over ``[start, end)``."""
    rows = scoped_query(
        store,
        "daily_spend_scope",
        "as-billed",
        {"tenant": budget.tenant, "tz": tz_name, "start": start, "end": end},
        scope=budget.scope,
    )
    return [(r["day"], int(r["cost_nanos"])) for r in rows]


def forecast_budgets(store: Store, budgets: BudgetFile, ctx: BillingContext) -> list[BudgetForecast]:
    """Forecast the current month of each monthly budget, as of the last complete local day."""
    tz = budgets.tz
    now_local = ctx.clock().astimezone(tz)
    as_of = now_local.date() - timedelta(days=1)
    month = f"{as_of.year:04d}-{as_of.month:02d}"
    period = month_period(month, tz)
    out = []
    for b in budgets.budgets:
        if b.period != "month":
            continue
        start = day_start(as_of - timedelta(days=HISTORY_DAYS), tz)
        series = daily_series(store, b, budgets.timezone, start, day_start(as_of + timedelta(days=1), tz))
        f = forecast_month(series, as_of, period.days[-1], period.days[0], limit_nanos=b.limit_nanos)
        out.append(BudgetForecast(b.id, b.tenant, dict(b.scope), month, f, backtest(series)))
    return out


def forecast_control(store: Store, control: ControlState, ctx: BillingContext) -> list[BudgetForecast]:
    """:func:`forecast_budgets` of the control plane's budgets, each tenant in its own timezone."""
    out: list[BudgetForecast] = []
    for tenant in sorted({b.tenant for b in list(control.budgets.values())}):
        t = control.tenant(tenant)
        mine = sorted(control.tenant_budgets(tenant).by_id.values(), key=lambda b: b.id)
        own = ctx.for_tenant(t.timezone, t.currency)
        out += forecast_budgets(store, BudgetFile(timezone=t.timezone, budgets=tuple(mine)), own)
    return out
