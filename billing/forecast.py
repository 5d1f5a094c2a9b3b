"""Month-end spend forecast: run-rate with weekday/weekend seasonality and a linear trend.

Pure: a function of a daily series and a date. Arithmetic in ``Decimal``; amounts are
returned as integer nano-USD. Model, per scope:

1. seasonal factors: mean spend on weekdays and on weekend days over the history, each
   divided by the overall mean;
2. trend: least squares line through the de-seasonalised last ``trend_days`` days;
3. forecast of each remaining day = trend value x that day's seasonal factor (never < 0);
4. interval: OLS prediction interval of the remaining days' total (residual noise plus the
   uncertainty of level and slope), at the stated z (default 1.2816: 80 % two-sided);
5. exhaustion: the first day on which actual then forecast cumulative spend reaches the limit.

The backtest replays the same model from past origins over the stored history and reports
the mean absolute percentage error of the next-7-days total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

Z_80 = Decimal("1.2816")


@dataclass(frozen=True)
class Forecast:
    """Projected spend of a calendar month, nano-USD."""

    as_of: date
    month_end: date
    month_to_date_nanos: int
    projected_nanos: int
    low_nanos: int
    high_nanos: int
    daily_forecast: tuple[tuple[date, int], ...]
    weekday_factor: Decimal
    weekend_factor: Decimal
    trend_nanos_per_day: int
    limit_nanos: int | None
    exhausted_on: date | None
    exhausted_low: date | None
    exhausted_high: date | None


def _round(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _dense(series: Sequence[tuple[date, int]], start: date, end: date) -> list[tuple[date, int]]:
    """Every day from ``start`` to ``end`` inclusive, zero where no spend was stored."""
    by_day = dict(series)
    return [
        (start + timedelta(days=i), by_day.get(start + timedelta(days=i), 0))
        for i in range((end - start).days + 1)
    ]


@dataclass(frozen=True)
class _Model:
    weekday: Decimal
    weekend: Decimal
    intercept: Decimal  # de-seasonalised level at x = 0 (the first trend day)
    slope: Decimal
    sigma: Decimal
    origin: date
    n: int
    mean_x: Decimal
    sxx: Decimal

    def factor(self, d: date) -> Decimal:
        return self.weekend if d.weekday() >= 5 else self.weekday

    def sum_half_width(self, days: Sequence[date], z: Decimal) -> Decimal:
        """Half-width of the prediction interval of the total over ``days``.

        OLS prediction variance of a sum of h future values: sigma^2 x (h + h^2/n +
        (X - h x mean_x)^2 / Sxx), X the sum of their x; scaled by the mean seasonal factor.
        """
        h = Decimal(len(days))
        if not days or self.n == 0:
            return Decimal(0)
        big_x = sum((Decimal((d - self.origin).days) for d in days), Decimal(0))
        var = h + h * h / self.n
        if self.sxx:
            var += (big_x - h * self.mean_x) ** 2 / self.sxx
        mean_factor = sum((self.factor(d) for d in days), Decimal(0)) / h
        return z * self.sigma * mean_factor * var.sqrt()

    def predict(self, d: date) -> Decimal:
        x = Decimal((d - self.origin).days)
        return max(Decimal(0), (self.intercept + self.slope * x) * self.factor(d))


def _fit(history: list[tuple[date, int]], trend_days: int) -> _Model:
    values = [Decimal(v) for _, v in history]
    zero = Decimal(0)
    overall = sum(values, zero) / len(values) if values else zero
    wd = [Decimal(v) for d, v in history if d.weekday() < 5]
    we = [Decimal(v) for d, v in history if d.weekday() >= 5]
    if overall > 0 and wd and we:
        weekday, weekend = (sum(wd, zero) / len(wd)) / overall, (sum(we, zero) / len(we)) / overall
    else:
        weekday = weekend = Decimal(1)
    recent = history[-trend_days:]
    origin = recent[0][0]
    xs = [Decimal((d - origin).days) for d, _ in recent]
    ys = [Decimal(v) / (weekend if d.weekday() >= 5 else weekday) for d, v in recent]
    n = Decimal(len(recent))
    mx, my = sum(xs, zero) / n, sum(ys, zero) / n
    sxx = sum(((x - mx) ** 2 for x in xs), zero)
    sxy = sum(((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)), zero)
    slope = sxy / sxx if sxx else zero
    intercept = my - slope * mx
    resid = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
    dof = max(len(resid) - 2, 1)
    sigma = (sum((r * r for r in resid), zero) / dof).sqrt()
    return _Model(weekday, weekend, intercept, slope, sigma, origin, len(recent), mx, sxx)


def forecast_month(
    series: Sequence[tuple[date, int]],
    as_of: date,
    month_end: date,
    month_start: date,
    *,
    limit_nanos: int | None = None,
    trend_days: int = 28,
    z: Decimal = Z_80,
) -> Forecast:
    """Forecast the month's total from daily spend up to and including ``as_of``.

    Args:
        series: ``(day, nano-USD)`` of stored spend; missing days count as zero.
        as_of: Last complete day used (in the budget's timezone).
        month_end: Last day of the month.
        month_start: First day of the month.
        limit_nanos: Budget limit, for the exhaustion date.
        trend_days: Days in the trend fit.
        z: Normal quantile of the interval.
    """
    first = min((d for d, _ in series), default=as_of)
    history = _dense([(d, v) for d, v in series if d <= as_of], min(first, as_of), as_of)
    model = _fit(history, trend_days)
    mtd_days = [(d, v) for d, v in history if d >= month_start]
    mtd = sum(v for _, v in mtd_days)
    remaining = [as_of + timedelta(days=i) for i in range(1, (month_end - as_of).days + 1)]
    daily = [(d, model.predict(d)) for d in remaining]
    projected = Decimal(mtd) + sum((v for _, v in daily), Decimal(0))
    half = model.sum_half_width(remaining, z)
    low, high = max(Decimal(mtd), projected - half), projected + half

    def exhaustion(shift: Decimal) -> date | None:
        if limit_nanos is None:
            return None
        cum = Decimal(0)
        for d, v in mtd_days:
            cum += v
            if cum >= limit_nanos:
                return d
        per_day = shift / len(remaining) if remaining else Decimal(0)
        for d, predicted in daily:
            cum += max(Decimal(0), predicted + per_day)
            if cum >= limit_nanos:
                return d
        return None

    return Forecast(
        as_of=as_of,
        month_end=month_end,
        month_to_date_nanos=mtd,
        projected_nanos=_round(projected),
        low_nanos=_round(low),
        high_nanos=_round(high),
        daily_forecast=tuple((d, _round(v)) for d, v in daily),
        weekday_factor=model.weekday.quantize(Decimal("0.0001")),
        weekend_factor=model.weekend.quantize(Decimal("0.0001")),
        trend_nanos_per_day=_round(model.slope),
        limit_nanos=limit_nanos,
        exhausted_on=exhaustion(Decimal(0)),
        exhausted_low=exhaustion(low - projected),
        exhausted_high=exhaustion(high - projected),
    )


@dataclass(frozen=True)
class Backtest:
    """Rolling-origin error of the model on stored history."""

    origins: int
    horizon_days: int
    mape: Decimal  # mean absolute percentage error of the horizon total, in percent
    coverage: Decimal  # share of horizons whose actual total fell inside the interval, percent


def backtest(
    series: Sequence[tuple[date, int]],
    horizon_days: int = 7,
    min_history: int = 21,
    trend_days: int = 28,
    z: Decimal = Z_80,
) -> Backtest | None:
    """Replay the model from every origin with ``min_history`` days behind it.

    Returns:
        The error figures, or ``None`` when the history is too short.
    """
    if not series:
        return None
    first, last = min(d for d, _ in series), max(d for d, _ in series)
    dense = _dense(series, first, last)
    errors: list[Decimal] = []
    covered = 0
    for i in range(min_history, len(dense) - horizon_days + 1):
        model = _fit(dense[:i], trend_days)
        window = dense[i : i + horizon_days]
        predicted = sum((model.predict(d) for d, _ in window), Decimal(0))
        actual = Decimal(sum(v for _, v in window))
        if actual == 0:
            continue
        errors.append(abs(predicted - actual) / actual)
        half = model.sum_half_width([d for d, _ in window], z)
        covered += predicted - half <= actual <= predicted + half
    if not errors:
        return None
    hundred = Decimal(100)
    return Backtest(
        origins=len(errors),
        horizon_days=horizon_days,
        mape=(sum(errors, Decimal(0)) / len(errors) * hundred).quantize(Decimal("0.01")),
        coverage=(Decimal(covered) / len(errors) * hundred).quantize(Decimal("0.1")),
    )
