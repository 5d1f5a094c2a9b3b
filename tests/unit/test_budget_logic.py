"""Pure budget, window and spike logic under an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tokenledger.budget_eval import evaluate, level_thresholds, matches, roll_over, state_for
from tokenledger.budgets import Budget, BudgetFile
from tokenledger.spikes import check_spike
from tokenledger.windows import RollingSum, calendar_window

SH = ZoneInfo("Asia/Shanghai")
USD = 1_000_000_000
B = Budget(
    id="r-month",
    tenant="acme",
    scope={"department": "research"},
    period="month",
    limit_usd=Decimal("100"),
    downgrade_model="gpt-4o-mini",
    max_tokens_per_request=2000,
)


def test_calendar_windows_in_stated_timezone() -> None:
    # 2026-10-31 17:00 UTC is already November 1st in Shanghai.
    w = calendar_window(datetime(2026, 10, 31, 17, 0, tzinfo=UTC), "month", SH)
    assert (w.start, w.end) == (datetime(2026, 10, 31, 16, tzinfo=UTC), datetime(2026, 11, 30, 16, tzinfo=UTC))
    d = calendar_window(datetime(2026, 3, 8, 15, 59, tzinfo=UTC), "day", SH)
    assert (d.start, d.end) == (datetime(2026, 3, 7, 16, tzinfo=UTC), datetime(2026, 3, 8, 16, tzinfo=UTC))
    ny = calendar_window(datetime(2026, 3, 8, 12, tzinfo=UTC), "day", ZoneInfo("America/New_York"))
    assert ny.end - ny.start == timedelta(hours=23)  # DST starts: a 23-hour day
    with pytest.raises(ValueError, match="timezone-aware"):
        calendar_window(datetime(2026, 1, 1), "day", SH)


def test_rolling_window_sums_last_hour_at_minute_granularity() -> None:
    t0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    r = RollingSum(timedelta(hours=1), timedelta(minutes=1))
    r.add(t0, 5, t0)
    r.add(t0 + timedelta(minutes=30), 7, t0 + timedelta(minutes=30))
    assert r.total(t0 + timedelta(minutes=59)) == 12
    assert r.total(t0 + timedelta(minutes=60)) == 7  # the 12:00 bucket left the window
    r.add(t0 - timedelta(hours=2), 100, t0 + timedelta(minutes=60))  # too late: outside the window
    assert r.total(t0 + timedelta(minutes=60)) == 7
    assert r.total(t0 + timedelta(minutes=91)) == 0
    r.prune(t0 + timedelta(minutes=91))
    assert r.buckets == {}


def test_levels_cross_exactly_once_per_period() -> None:
    assert level_thresholds(B) == {"warning": 50 * USD, "throttled": 80 * USD, "broken": 100 * USD}
    now = datetime(2026, 10, 10, tzinfo=UTC)
    status, crossings, breaker = evaluate(B, None, 10 * USD, now, "Asia/Shanghai")
    assert crossings == [] and breaker is not None and breaker.state == "normal"
    status, crossings, breaker = evaluate(B, status, 85 * USD, now, "Asia/Shanghai")
    assert [c.level for c in crossings] == ["warning", "throttled"]  # one jump crosses two levels
    assert breaker is not None and breaker.state == "throttled"
    assert breaker.remaining_nanos == 15 * USD and breaker.downgrade_model == "gpt-4o-mini"
    status, crossings, breaker = evaluate(B, status, 85 * USD + USD // 2, now, "Asia/Shanghai")
    assert crossings == [] and breaker is None  # same state, moved less than 1 % of the limit
    status, crossings, breaker = evaluate(B, status, 90 * USD, now, "Asia/Shanghai")
    assert crossings == [] and breaker is not None  # moved >= 1 %: fresh remaining amount
    assert (breaker.state, breaker.remaining_nanos) == ("throttled", 10 * USD)
    status, crossings, breaker = evaluate(B, status, 100 * USD, now, "Asia/Shanghai")
    assert [c.level for c in crossings] == ["broken"] and breaker is not None
    assert breaker.state == "broken" and breaker.remaining_nanos == 0
    assert breaker.to_json()["remaining_usd"] == "0.000000000"  # fixed point, never exponent form
    status, crossings, breaker = evaluate(B, status, 100 * USD + USD // 2, now, "Asia/Shanghai")
    assert crossings == [] and breaker is None


def test_new_period_returns_to_normal() -> None:
    oct_ = datetime(2026, 10, 20, tzinfo=UTC)
    status, _, _ = evaluate(B, None, 120 * USD, oct_, "Asia/Shanghai")
    assert status.state == "broken" and status.emitted == ("warning", "throttled", "broken")
    nov = datetime(2026, 10, 31, 16, 0, tzinfo=UTC)  # Nov 1st 00:00 Shanghai
    assert roll_over(B, status, nov - timedelta(seconds=1), "Asia/Shanghai") is None
    breaker = roll_over(B, status, nov, "Asia/Shanghai")
    assert breaker is not None and breaker.state == "normal" and breaker.remaining_nanos == 100 * USD
    assert breaker.period_end == datetime(2026, 11, 30, 16, tzinfo=UTC)
    fresh, crossings, _ = evaluate(B, status, 60 * USD, nov, "Asia/Shanghai")
    assert [c.level for c in crossings] == ["warning"]  # levels re-armed for the new month
    assert fresh.period_key == "2026-10-31T16:00Z"


def test_rolling_budget_rearms_levels_as_spend_ages_out() -> None:
    hourly = Budget(id="k-1h", tenant="acme", scope={"api_key": "k"}, period="rolling_1h", limit_usd=Decimal("5"))
    now = datetime(2026, 10, 1, tzinfo=UTC)
    s, c, _ = evaluate(hourly, None, 6 * USD, now, "UTC")
    assert [x.level for x in c] == ["warning", "throttled", "broken"]
    s, c, b = evaluate(hourly, s, 1 * USD, now + timedelta(hours=1), "UTC")
    assert c == [] and b is not None and b.state == "normal" and s.emitted == ()
    s, c, _ = evaluate(hourly, s, 3 * USD, now + timedelta(hours=1, minutes=5), "UTC")
    assert [x.level for x in c] == ["warning"]


def test_scope_matching_any_dimension_combination() -> None:
    combo = Budget(id="c", tenant="acme", scope={"project": "copilot", "model": "gpt-4o"}, limit_usd=Decimal(1))
    labels = {"project": "copilot", "department": "research"}
    assert matches(combo, "acme", labels, "gpt-4o")
    assert not matches(combo, "acme", labels, "gpt-4o-mini")
    assert not matches(combo, "globex", labels, "gpt-4o")
    user = Budget(id="u", tenant="acme", scope={"user_id": "u1"}, limit_usd=Decimal(1))
    assert matches(user, "acme", {"user": "u1"}, "m")
    assert state_for(B, 49 * USD) == "normal" and state_for(B, 50 * USD) == "warning"


def test_budget_file_validation() -> None:
    with pytest.raises(ValueError, match="unknown scope dimension"):
        Budget(id="x", tenant="t", scope={"team": "a"}, limit_usd=Decimal(1))
    with pytest.raises(ValueError, match="levels"):
        Budget.model_validate(
            {"id": "x", "tenant": "t", "limit_usd": "1", "levels": {"warn": "0.9", "throttle": "0.5"}}
        )
    with pytest.raises(ValueError, match="quoted strings"):
        Budget.model_validate({"id": "x", "tenant": "t", "limit_usd": 1.5})
    shipped = BudgetFile.load()
    assert {b.id for b in shipped.budgets} >= {"acme-research-month", "acme-key0-hourly"}


def test_spike_against_same_hour_yesterday() -> None:
    now = datetime(2026, 10, 2, 14, 30, tzinfo=UTC)
    hour = int(datetime(2026, 10, 2, 14, tzinfo=UTC).timestamp())
    hourly = {hour - 86_400: 2 * USD, hour: 7 * USD}
    seen: set[int] = set()
    spike = check_spike("tenant=acme", hourly, now, seen)
    assert spike is not None and spike.ratio == Decimal("3.50") and spike.baseline_nanos == 2 * USD
    assert check_spike("tenant=acme", hourly, now, seen) is None  # once per hour
    assert check_spike("t", {hour - 86_400: 3 * USD, hour: 9 * USD}, now, set()) is None  # exactly 3x is not over
    assert check_spike("t", {hour: USD // 2}, now, set()) is None  # below the noise floor
