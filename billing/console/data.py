"""What each console page shows, computed from the rollups (exact) and the control plane.

Every figure is integer nano-USD (or nano-units of the tenant's currency) until the page
formats it. Figures that need the whole month's raw rows (allocation across traces, the
tenant bill's advice) are cached per month under the month's insert counts: any insert into
the month (a late event, a duplicate) changes the key, so a cached figure is never stale.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from billing.allocation import METHODS, allocate
from billing.bill import AS_BILLED, build_bill
from billing.context import BillingContext
from billing.forecast import Forecast, forecast_month
from billing.forecast_job import HISTORY_DAYS, daily_series
from billing.jobs import month_spans
from billing.model import Bill, Scope
from billing.periods import Period, day_start, month_period
from billing.rollups import Rollups
from billing.selfhost import BreakEven, SelfHostTable, break_even
from tokenledger.budgets import Budget
from tokenledger.control.state import ControlState
from tokenledger.guard import BreakerView
from tokenledger.store.base import Store, load_query

log = logging.getLogger("tokenledger.console")

ROLLUP_DIMS = ("department", "project", "provider", "model", "feature", "environment", "api_key")
STACK_DIMS = ("department", "project", "model", "feature")
BILL_DIMS = ("department", "project", "model", "feature", "environment", "api_key")
STACK_TOP = 7  # stacked series shown by name; the rest are summed as "(other)"
PARTIES = ("project", "department", "source")


def month_label(d: date) -> str:
    """``YYYY-MM`` of a date."""
    return f"{d.year:04d}-{d.month:02d}"


def previous_month(month: str) -> str:
    """The month before ``YYYY-MM``."""
    y, m = int(month[:4]), int(month[5:7])
    return f"{y - 1:04d}-12" if m == 1 else f"{y:04d}-{m - 1:02d}"


def daily_totals(rows: Sequence[Mapping[str, Any]]) -> dict[date, int]:
    """Pure: nano-USD per day."""
    out: dict[date, int] = defaultdict(int)
    for r in rows:
        out[r["day"]] += int(r["cost_nanos"])
    return dict(out)


def matches(row: Mapping[str, Any], scope: Mapping[str, str]) -> bool:
    """Whether a rollup row is inside a budget scope (its dimensions all in the rollup)."""
    return all(str(row[k]) == v for k, v in scope.items())


def stacked(
    rows: Sequence[Mapping[str, Any]], by: str, days: Sequence[date]
) -> tuple[list[str], dict[date, dict[str, int]]]:
    """Pure: daily spend split by ``by``; the ``STACK_TOP`` largest values by name, the rest as "(other)"."""
    totals: dict[str, int] = defaultdict(int)
    for r in rows:
        totals[str(r[by]) or "(none)"] += int(r["cost_nanos"])
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    named = ranked[:STACK_TOP]
    keys = named + (["(other)"] if len(ranked) > STACK_TOP else [])
    keep = set(named)
    grid: dict[date, dict[str, int]] = {d: dict.fromkeys(keys, 0) for d in days}
    for r in rows:
        value = str(r[by]) or "(none)"
        grid.setdefault(r["day"], dict.fromkeys(keys, 0))[value if value in keep else "(other)"] += int(r["cost_nanos"])
    return keys, grid


@dataclass(frozen=True)
class Money:
    """An amount in USD and in the tenant's currency (converted per day, as bills do)."""

    usd_nanos: int
    local_nanos: int
    currency: str


@dataclass(frozen=True)
class BudgetLine:
    """A budget's live status."""

    budget: Budget
    state: str  # normal / warning / throttled / broken (from the breakers topic)
    spent_nanos: int
    period_end: datetime | None
    exhausted_on: date | None
    live: bool  # whether the breakers topic has a message for it


@dataclass(frozen=True)
class Overview:
    """The month overview."""

    tenant: str
    month: str
    timezone: str
    total: Money
    requests: int
    daily: Mapping[date, int]
    previous: Money
    forecast: Forecast | None  # the current month only
    budgets: tuple[BudgetLine, ...]


@dataclass(frozen=True)
class ScopeLine:
    """One bill of the bills page."""

    dimension: str
    value: str
    requests: int
    cost_nanos: int
    rerated: Mapping[str, int] = field(default_factory=dict)  # run id -> nano-USD


@dataclass(frozen=True)
class AllocationView:
    """The four allocation methods side by side."""

    month: str
    party: str
    total_nanos: int
    traced_nanos: int
    splits: Mapping[str, Mapping[str, int]]  # method -> party value -> nano-USD


@dataclass(frozen=True)
class Cached:
    """A month figure too costly to recompute on every page (the tenant bill, the allocation)."""

    value: Any
    computed_at: datetime
    fresh: bool  # False: rows arrived since it was computed; a newer one is being computed


class ConsoleData:
    """The pages' figures for any tenant (authorisation is the caller's)."""

    def __init__(
        self,
        store: Store,
        ctx_of: Callable[[str], BillingContext],
        control: ControlState,
        breakers: Callable[[], Mapping[str, BreakerView]] = dict,
        selfhost: SelfHostTable | None = None,
    ) -> None:
        self.store, self.ctx_of, self.control, self.breakers = store, ctx_of, control, breakers
        self.rollups = Rollups(store)
        self.selfhost = selfhost or SelfHostTable.load()
        self._cache: dict[tuple[Any, ...], tuple[Any, Any, datetime]] = {}
        self._running: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()

    # -- calendar ----------------------------------------------------------------------------
    def tz(self, tenant: str) -> ZoneInfo:
        """The tenant's timezone."""
        return self.ctx_of(tenant).config.tz

    def now(self, tenant: str) -> datetime:
        """The injected clock."""
        return self.ctx_of(tenant).clock()

    def today(self, tenant: str) -> date:
        """Today in the tenant's timezone."""
        return self.now(tenant).astimezone(self.tz(tenant)).date()

    def current_month(self, tenant: str) -> str:
        """This month in the tenant's timezone."""
        return month_label(self.today(tenant))

    def period(self, tenant: str, month: str) -> Period:
        """A month in the tenant's timezone."""
        return month_period(month, self.tz(tenant))

    def spend(self, tenant: str, month: str, keys: Sequence[str] = ("day",)) -> list[dict[str, Any]]:
        """A month's spend grouped by ``keys``."""
        return self.rollups.spend(tenant, self.tz(tenant), self.period(tenant, month).days, self.today(tenant), keys)

    def money(self, tenant: str, rows: Sequence[Mapping[str, Any]]) -> Money:
        """Total of rows in USD and in the tenant's currency, converted per day at that day's rate."""
        ctx = self.ctx_of(tenant)
        tz, currency = ctx.config.tz, ctx.config.currency
        by_day = daily_totals(rows)
        local = sum(ctx.fx.convert(n, "USD", currency, day_start(d, tz)).nanos for d, n in by_day.items())
        return Money(sum(by_day.values()), local, currency)

    def months_with_data(self, tenant: str, limit: int = 12) -> list[str]:
        """The last ``limit`` months (tenant-local) with stored usage, newest first."""
        span = self.rollups.data_days(tenant)
        if span is None:
            return []
        tz = self.tz(tenant)
        first = datetime(span[0].year, span[0].month, span[0].day, tzinfo=UTC).astimezone(tz).date()
        last = (
            (datetime(span[1].year, span[1].month, span[1].day, tzinfo=UTC) + timedelta(days=1, microseconds=-1))
            .astimezone(tz)
            .date()
        )
        months: list[str] = []
        d = date(last.year, last.month, 1)
        while d >= date(first.year, first.month, 1) and len(months) < limit:
            months.append(month_label(d))
            d = (d - timedelta(days=1)).replace(day=1)
        return months

    # -- pages -------------------------------------------------------------------------------
    def overview(self, tenant: str, month: str) -> Overview:
        """Total, last month, forecast, budgets."""
        rows = self.spend(tenant, month)
        prev = self.spend(tenant, previous_month(month))
        forecast = None
        budget_series: dict[str, list[tuple[date, int]]] = {}
        today = self.today(tenant)
        period = self.period(tenant, month)
        if month == month_label(today) and today > period.days[0]:
            forecast, budget_series = self._forecasts(tenant, period, today)
        return Overview(
            tenant,
            month,
            self.ctx_of(tenant).config.timezone,
            self.money(tenant, rows),
            sum(int(r["requests"]) for r in rows),
            daily_totals(rows),
            self.money(tenant, prev),
            forecast,
            tuple(self._budget_lines(tenant, budget_series, period, today)),
        )

    def _forecasts(
        self, tenant: str, period: Period, today: date
    ) -> tuple[Forecast, dict[str, list[tuple[date, int]]]]:
        as_of = today - timedelta(days=1)
        tz = self.tz(tenant)
        monthly = [b for b in self._budgets(tenant) if b.period == "month"]
        in_rollup = [b for b in monthly if set(b.scope) <= set(ROLLUP_DIMS)]
        days = [today - timedelta(days=i) for i in range(HISTORY_DAYS, 0, -1)]
        rows = self.rollups.spend(tenant, tz, days, today, ("day",), series=[b.scope for b in in_rollup])
        rows.sort(key=lambda r: r["day"])
        forecast = forecast_month(
            [(r["day"], int(r["cost_nanos"])) for r in rows], as_of, period.days[-1], period.days[0]
        )
        out = {b.id: [(r["day"], int(r[f"s{i}"])) for r in rows] for i, b in enumerate(in_rollup)}
        for b in monthly:
            if b.id not in out:  # a user's budget: its rows are only in usage_events
                start, end = day_start(as_of - timedelta(days=HISTORY_DAYS), tz), day_start(today, tz)
                out[b.id] = daily_series(self.store, b, tz.key, start, end)
        return forecast, out

    def _budgets(self, tenant: str) -> list[Budget]:
        return sorted(self.control.tenant_budgets(tenant).by_id.values(), key=lambda b: b.id)

    def _budget_lines(
        self, tenant: str, series: Mapping[str, list[tuple[date, int]]], period: Period, today: date
    ) -> list[BudgetLine]:
        views = self.breakers()
        now = self.now(tenant)
        out = []
        for b in self._budgets(tenant):
            v = views.get(b.id)
            if v is not None and v.tenant != tenant:  # never another tenant's breaker
                v = None
            live = v is not None and not v.ended(now)
            exhausted = None
            if b.id in series:
                f = forecast_month(
                    series[b.id], today - timedelta(days=1), period.days[-1], period.days[0], limit_nanos=b.limit_nanos
                )
                exhausted = f.exhausted_on
            out.append(
                BudgetLine(
                    b,
                    v.state if v is not None and live else "normal",
                    v.spent_nanos if v is not None and live else 0,
                    v.period_end if v is not None and live else None,
                    exhausted,
                    live,
                )
            )
        return out

    def budgets(self, tenant: str) -> Overview:
        """The budgets page: the overview of the current month (its budget lines carry everything)."""
        return self.overview(tenant, self.current_month(tenant))

    def spend_page(
        self, tenant: str, month: str, by: str
    ) -> tuple[list[str], dict[date, dict[str, int]], list[dict[str, Any]], Money]:
        """Stacked daily spend, the month's ten costliest requests, and the month's total."""
        if by not in STACK_DIMS:
            raise ValueError(f"by {by!r} must be one of {', '.join(STACK_DIMS)}")
        period = self.period(tenant, month)
        rows = self.spend(tenant, month, ("day", by))
        keys, grid = stacked(rows, by, period.days)
        top = self.rollups.top_requests(tenant, self.tz(tenant), period.days, self.today(tenant))
        return keys, grid, top, self.money(tenant, rows)

    def bills(self, tenant: str, month: str) -> list[ScopeLine]:
        """Every bill scope of a month (tenant, departments, projects, models, features, environments, keys)."""
        rows = self.spend(tenant, month, BILL_DIMS)
        acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        scopes = ("tenant", *BILL_DIMS)
        for r in rows:
            for dim in scopes:
                value = tenant if dim == "tenant" else str(r[dim])
                if value:
                    a = acc[(dim, value)]
                    a[0] += int(r["requests"])
                    a[1] += int(r["cost_nanos"])
        rerated = self.rerated(tenant, month)
        order = {d: i for i, d in enumerate(scopes)}
        return [
            ScopeLine(dim, value, n, cost, rerated.get((dim, value), {}))
            for (dim, value), (n, cost) in sorted(acc.items(), key=lambda kv: (order[kv[0][0]], -kv[1][1], kv[0][1]))
        ]

    def rerated(self, tenant: str, month: str) -> dict[tuple[str, str], dict[str, int]]:
        """Re-rating runs' totals of the month per tenant/department/project scope."""
        period = self.period(tenant, month)
        params = {"tenant": tenant, "start": period.start, "end": period.end}
        rows = self.store.query(load_query("rerated_scopes"), params).dicts()
        out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in rows:
            for key in (("tenant", tenant), ("department", str(r["department"])), ("project", str(r["project"]))):
                out[key][str(r["rating_run"])] += int(r["cost_nanos"])
        return {k: dict(v) for k, v in out.items()}

    def _fingerprint(self, tenant: str, month: str) -> tuple[Any, ...]:
        period = self.period(tenant, month)
        plan = self.rollups.plan(tenant, self.tz(tenant), period.days, self.today(tenant))
        return (tuple(sorted(plan.seen.items())), self.tz(tenant).key, self.ctx_of(tenant).config.currency)

    def _cached(self, key: tuple[Any, ...], tenant: str, month: str, compute: Callable[[], Any]) -> Cached:
        """``compute()`` under the month's insert counts.

        A value computed under other counts (rows arrived since) is answered at once, marked
        with the time it was computed, while one background thread recomputes it; with no
        value at all the caller waits for the computation.
        """
        fp = self._fingerprint(tenant, month)
        with self._lock:
            found = self._cache.get(key)
            stale = found is not None and found[0] != fp
            start = stale and key not in self._running
            if start:
                self._running.add(key)
        if found is not None and not stale:
            return Cached(found[1], found[2], fresh=True)
        if found is not None:
            if start:
                threading.Thread(target=self._recompute, args=(key, fp, compute), daemon=True).start()
            return Cached(found[1], found[2], fresh=False)
        at = datetime.now(UTC)
        value = compute()
        with self._lock:
            self._cache[key] = (fp, value, at)
        return Cached(value, at, fresh=True)

    def _recompute(self, key: tuple[Any, ...], fp: tuple[Any, ...], compute: Callable[[], Any]) -> None:
        try:
            at = datetime.now(UTC)
            value = compute()
            with self._lock:
                self._cache[key] = (fp, value, at)
        except Exception:  # the next page load tries again; it answers the last value meanwhile
            log.exception("console: recomputing %s failed", key)
        finally:
            with self._lock:
                self._running.discard(key)

    def allocation(self, tenant: str, month: str, party: str) -> Cached:
        """The four methods over the month's traced spend, and the share of spend they cover."""
        if party not in PARTIES:
            raise ValueError(f"party {party!r} must be one of {', '.join(PARTIES)}")

        def compute() -> AllocationView:
            ctx = self.ctx_of(tenant)
            spans = month_spans(self.store, ctx, tenant, month, party)
            amount = sum(s.cost_nanos for s in spans)
            splits: dict[str, Mapping[str, int]] = {m: (allocate(amount, spans, m) if spans else {}) for m in METHODS}
            total = sum(int(r["cost_nanos"]) for r in self.spend(tenant, month, ()))
            return AllocationView(month, party, total, amount, splits)

        return self._cached(("allocation", tenant, month, party), tenant, month, compute)

    def tenant_bill(self, tenant: str, month: str) -> Cached:
        """The tenant's bill of the month (its advice and figures), cached under the month's inserts."""

        def compute() -> Bill:
            ctx = self.ctx_of(tenant)
            return build_bill(self.store, Scope(tenant, "tenant", tenant), self.period(tenant, month), ctx, AS_BILLED)

        return self._cached(("bill", tenant, month), tenant, month, compute)

    def break_even(self, tenant: str, month: str) -> list[BreakEven]:
        """Self-hosting break-even per model family over the month."""
        return break_even(self.spend(tenant, month, ("model",)), self.selfhost)

    def warm(self, tenant: str) -> None:
        """Compute the cached figures of the current and the last month (the background refresher calls it)."""
        month = self.current_month(tenant)
        for m in (month, previous_month(month)):
            self.allocation(tenant, m, "project")
            self.tenant_bill(tenant, m)
