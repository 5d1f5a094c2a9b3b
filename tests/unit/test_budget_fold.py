"""The budget fold equals evaluating after every request: same state, status and outputs in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_jobs.budget_fold import BUDGET_KEEP_DAYS, BUDGET_KEEP_MONTHS, Output, fold_budget
from stream_jobs.spend_state import SpendFold, When, spent
from tokenledger import windows
from tokenledger.budget_eval import BudgetStatus, evaluate, evaluate_late, period_of
from tokenledger.budgets import Budget
from tokenledger.windows import ROLLING, calendar_window

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START_US = (datetime(2026, 10, 31, 15, 0, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def reference(
    budget: Budget, state: dict[str, Any] | None, status: BudgetStatus | None, entries: list[tuple[int, int, int, int]]
) -> tuple[dict[str, Any], BudgetStatus | None, list[Output]]:
    """The spend agent's rule before the fold: full evaluation after every request."""
    fold = SpendFold(state, keep_days=BUDGET_KEEP_DAYS, keep_months=BUDGET_KEEP_MONTHS)
    out: list[Output] = []
    for _, _, at_us, nanos in entries:
        when = When.of(EPOCH + timedelta(microseconds=at_us), TZ)
        fold.add(when, nanos)
        at = when.at
        period_key, _ = period_of(budget, at, TZ_NAME)
        if status is not None and budget.period not in ROLLING and period_key < status.period_key:
            status, late = evaluate_late(budget, status, period_key, spent(fold.view(), budget.period, at, TZ), at)
            out.extend(late)
            continue
        now = max(at, status.as_of) if status is not None and status.as_of is not None else at
        status, crossings, breaker = evaluate(budget, status, spent(fold.view(), budget.period, now, TZ), now, TZ_NAME)
        out.extend(crossings)
        if breaker is not None:
            out.append(breaker)
    return fold.state(), status, out


entries_st = st.lists(
    st.tuples(
        st.integers(-3_600, 3 * 86_400),  # seconds from the start: across days, a month end, and late ones
        # nano-USD against limits of 5-100 USD: round amounts land exactly on thresholds and steps
        st.one_of(st.sampled_from([0, 50_000_000, 250_000_000, 1_000_000_000]), st.integers(0, 3_000_000_000)),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(
    period=st.sampled_from(["day", "month", "rolling_1h", "rolling_24h"]),
    limit=st.sampled_from(["5", "20", "100"]),
    step=st.sampled_from(["0.01", "0.2", "1"]),
    first=entries_st,
    second=entries_st,
    jitter=st.booleans(),
)
def test_fold_equals_request_by_request(
    period: str, limit: str, step: str, first: list[tuple[int, int]], second: list[tuple[int, int]], jitter: bool
) -> None:
    budget = Budget.model_validate(
        {"id": "b", "tenant": "acme", "period": period, "limit_usd": Decimal(limit), "publish_step": Decimal(step)}
    )
    state_a: dict[str, Any] | None = None
    state_b: dict[str, Any] | None = None
    status_a: BudgetStatus | None = None
    status_b: BudgetStatus | None = None
    for part in (first, second):  # two deltas: the second starts from the first's stored status
        seq = sorted(part) if not jitter else part
        entries = [(0, i, START_US + s * 1_000_000 + i, n) for i, (s, n) in enumerate(seq)]
        state_a, status_a, out_a = fold_budget(budget, state_a, status_a, entries, tz=TZ, tz_name=TZ_NAME)
        state_b, status_b, out_b = reference(budget, state_b, status_b, entries)
        assert out_a == out_b
        assert status_a == status_b
        assert state_a == state_b


def test_quiet_requests_are_only_added_up() -> None:
    """1,000 requests of 1 USD against 10,000 USD a month: a breaker at the first and every 100 USD (1 %)."""
    budget = Budget.model_validate({"id": "b", "tenant": "acme", "period": "month", "limit_usd": "10000"})
    entries = [(0, i, START_US + 3_600_000_000 + i * 60_000_000, 1_000_000_000) for i in range(1_000)]  # Nov 1st
    _, status, out = fold_budget(budget, None, None, entries, tz=TZ, tz_name=TZ_NAME)
    _, ref_status, ref_out = reference(budget, None, None, entries)
    assert out == ref_out
    assert status == ref_status
    assert status is not None
    # 1,000 USD spent in 1 USD steps, breaker every 1 % of 10,000 USD (100 USD): the first and 10 more
    assert [o.spent_nanos for o in out] == [1_000_000_000, *(100_000_000_000 * k + 1_000_000_000 for k in range(1, 10))]
    assert status.spent_nanos == 1_000_000_000_000
    assert status.state == "normal"


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["day", "month"]),
    st.sampled_from(["Asia/Shanghai", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]),
    st.lists(st.integers(-40 * 86_400 * 10**6, 40 * 86_400 * 10**6), min_size=1, max_size=40),
)
def test_period_of_sparse_instants_equals_the_calendar_window(period: str, tz_name: str, deltas_us: list[int]) -> None:
    """Instants days apart, back and forth, over DST changes, one µs either side of midnight:
    the window remembered from the last lookup is reused only where it holds."""
    windows._LAST.clear()
    budget = Budget(id="b", tenant="acme", period=period, limit_usd=Decimal("1"))
    tz = ZoneInfo(tz_name)
    midnight = datetime(2026, 11, 1, tzinfo=tz).astimezone(UTC)
    for d in deltas_us:
        for at in (midnight + timedelta(microseconds=d), midnight - timedelta(microseconds=1), midnight):
            window = calendar_window(at, period, tz)  # type: ignore[arg-type]
            assert period_of(budget, at, tz_name) == (window.key, window.end)
