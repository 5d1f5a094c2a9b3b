"""Forecast accuracy on synthetic series with a known weekday/weekend pattern and trend."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

from billing.forecast import backtest, forecast_month

USD = 1_000_000_000


def synthetic(start: date, days: int, noise: float = 0.0, seed: int = 3) -> list[tuple[date, int]]:
    """Weekdays 100 USD, weekends 40 USD, +1 USD per day of trend, optional multiplicative noise."""
    rng = random.Random(seed)
    out = []
    for i in range(days):
        d = start + timedelta(days=i)
        base = (100 if d.weekday() < 5 else 40) + i
        jitter = 1 + rng.uniform(-noise, noise) if noise else 1
        out.append((d, int(base * jitter * USD)))
    return out


def true_total(start: date, first: date, last: date) -> int:
    return sum(v for d, v in synthetic(start, (last - start).days + 1) if d >= first)


def test_exact_pattern_is_recovered() -> None:
    start = date(2026, 8, 3)  # a Monday
    series = synthetic(start, (date(2026, 10, 14) - start).days + 1)
    f = forecast_month(series, date(2026, 10, 14), date(2026, 10, 31), date(2026, 10, 1), limit_nanos=2500 * USD)
    actual = true_total(start, date(2026, 10, 1), date(2026, 10, 31))
    error = abs(Decimal(f.projected_nanos - actual)) / actual
    # A multiplicative season on an additive trend is not exactly the model: small, known error.
    assert error < Decimal("0.02"), error
    assert f.low_nanos <= f.projected_nanos <= f.high_nanos
    assert f.weekday_factor > Decimal(1) > f.weekend_factor
    assert f.trend_nanos_per_day > 0
    assert f.exhausted_on is not None and date(2026, 10, 14) < f.exhausted_on <= date(2026, 10, 31)


def test_noisy_pattern_error_and_interval() -> None:
    start = date(2026, 8, 3)
    series = synthetic(start, (date(2026, 10, 31) - start).days + 1, noise=0.10)
    known = [(d, v) for d, v in series if d <= date(2026, 10, 14)]
    f = forecast_month(known, date(2026, 10, 14), date(2026, 10, 31), date(2026, 10, 1))
    actual = sum(v for d, v in series if d >= date(2026, 10, 1))
    error = abs(Decimal(f.projected_nanos - actual)) / actual
    assert error < Decimal("0.03"), error  # measured: ~0.5 %
    assert f.low_nanos <= actual <= f.high_nanos
    bt = backtest(series)
    assert bt is not None
    assert bt.mape < Decimal("6"), bt  # 7-day horizon, +-10 % daily noise
    assert bt.coverage >= Decimal("60"), bt


def test_already_exhausted_and_no_limit() -> None:
    series = [(date(2026, 10, 1) + timedelta(days=i), 10 * USD) for i in range(10)]
    f = forecast_month(series, date(2026, 10, 10), date(2026, 10, 31), date(2026, 10, 1), limit_nanos=35 * USD)
    assert f.exhausted_on == date(2026, 10, 4)
    assert f.month_to_date_nanos == 100 * USD
    assert f.projected_nanos == 310 * USD  # flat 10 USD/day, no season, no trend
    g = forecast_month(series, date(2026, 10, 10), date(2026, 10, 31), date(2026, 10, 1))
    assert g.exhausted_on is None


def test_empty_history() -> None:
    f = forecast_month([], date(2026, 10, 10), date(2026, 10, 31), date(2026, 10, 1), limit_nanos=USD)
    assert (f.projected_nanos, f.exhausted_on) == (0, None)
    assert backtest([]) is None


def test_runaway_day_does_not_extrapolate() -> None:
    """A one-day 30x spike (an agent loop) counts once; it does not tilt the trend."""
    start = date(2026, 8, 3)
    clean = synthetic(start, (date(2026, 10, 20) - start).days + 1, noise=0.05)
    spike_day = date(2026, 10, 18)
    spiky = [(d, v * 30 if d == spike_day else v) for d, v in clean]
    as_of, end, first = date(2026, 10, 20), date(2026, 10, 31), date(2026, 10, 1)
    base = forecast_month(clean, as_of, end, first)
    hit = forecast_month(spiky, as_of, end, first)
    extra = dict(spiky)[spike_day] - dict(clean)[spike_day]
    # The spiky month is the clean month plus the spike itself, within 2 %.
    assert abs(Decimal(hit.projected_nanos - base.projected_nanos - extra)) / base.projected_nanos < Decimal("0.02")
