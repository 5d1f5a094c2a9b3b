"""Month-end spend forecast: run-rate with weekday/weekend seasonality and a linear trend.

Pure: a function of a daily series and a date. Arithmetic in ``Decimal``; amounts are
returned as integer nano-USD. Model, per scope:

1. seasonal factors: median spend on weekdays and on weekend days over the history,
   normalised so that a week's factors average one (medians: a runaway day does not move them);
2. trend: robust line through the de-seasonalised last ``trend_days`` days (Theil-Sen slope,
   median intercept), so a single runaway day does not extrapolate into the month;
3. forecast of each remaining day = trend value x that day's seasonal factor (never < 0);
4. interval: prediction interval of the remaining days' total (residual RMS, winsorised at
   three robust sigmas, plus the uncertainty of level and slope), at the stated z (default
   1.2816: 80 % two-sided);
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
    return int(x.to_integral_value(rounding=ROUND_HALF_EVEN))


def _dense(series: Sequence[tuple[date, int]], start: date, end: date) -> list[tuple[date, int]]:
    """Every day from ``start`` to ``end`` inclusive, zero where no spend was stored."""
    by_day = dict(series)
    return [
        (start + timedelta(days=i), by_day.get(start + timedelta(days=i), 0)) for i in range((end - start).days + 1)
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
    zero = Decimal(0)
    wd = [Decimal(v) for d, v in history if d.weekday() < 5]
    we = [Decimal(v) for d, v in history if d.weekday() >= 5]
    # Medians, normalised so a week's factors average 1: robust to a runaway day.
    level = (5 * _median(wd) + 2 * _median(we)) / 7 if wd and we else zero
    if level > 0:
        weekday, weekend = _median(wd) / level, _median(we) / level
    else:
        weekday = weekend = Decimal(1)
    recent = history[-trend_days:]
    origin = recent[0][0]
    xs = [Decimal((d - origin).days) for d, _ in recent]
    ys = [Decimal(v) / (weekend if d.weekday() >= 5 else weekday) for d, v in recent]
    n = Decimal(len(recent))
    mx = sum(xs, zero) / n
    sxx = sum(((x - mx) ** 2 for x in xs), zero)
    # Theil-Sen: the median of pairwise slopes. One runaway day must not tilt the month.
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]
    ]
    slope = _median(slopes) if slopes else zero
    intercept = _median([y - slope * x for x, y in zip(xs, ys, strict=True)])
    resid = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
    # Residual scale: RMS of the residuals winsorised at 3 robust sigmas (1.4826 x MAD), so a
    # runaway day is capped but ordinary and systematic error still widens the interval.
    cap = 3 * _MAD_TO_SIGMA * _median([abs(r) for r in resid]) if resid else zero
    clipped = [min(abs(r), cap) if cap else abs(r) for r in resid]
    dof = max(len(resid) - 2, 1)
    sigma = (sum((r * r for r in clipped), zero) / dof).sqrt()
    # Floor at 0.1 % of the level: a perfectly regular history must not give a zero-width band.
    sigma = max(sigma, abs(sum(ys, zero) / n) / 1000)
    return _Model(weekday, weekend, intercept, slope, sigma, origin, len(recent), mx, sxx)


_MAD_TO_SIGMA = Decimal("1.4826")


def _median(values: Sequence[Decimal]) -> Decimal:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def forecast_month(
    series: Sequence[tuple[date, int]],
    as_of: date,
    month_end: date,
    month_start: date,
    *,
    limit_nanos: int | None = None,
    trend_days: int = 28,
    z: Decimal = Z_80,
    level: Decimal = Decimal("0.8"),
) -> Forecast:
    """Forecast the month's total from daily spend up to and including ``as_of``.

    Args:
        series: ``(day, nano-USD)`` of stored spend; missing days count as zero.
        as_of: Last complete day used (in the budget's timezone).
        month_end: Last day of the month.
        month_start: First day of the month.
        limit_nanos: Budget limit, for the exhaustion date.
        trend_days: Days in the trend fit.
        z: Normal quantile used when the history is too short to calibrate.
        level: Interval coverage aimed at.
    """
    first = min((d for d, _ in series), default=as_of)
    history = _dense([(d, v) for d, v in series if d <= as_of], min(first, as_of), as_of)
    model = _fit(history, trend_days)
    mtd_days = [(d, v) for d, v in history if d >= month_start]
    mtd = sum(v for _, v in mtd_days)
    remaining = [as_of + timedelta(days=i) for i in range(1, (month_end - as_of).days + 1)]
    daily = [(d, model.predict(d)) for d in remaining]
    projected = Decimal(mtd) + sum((v for _, v in daily), Decimal(0))
    # Interval multiplier calibrated on this scope's own past errors (split conformal),
    # falling back to the normal quantile when the history is short.
    scores = [r.score for r in _replay(history, max(len(remaining), 1), 21, trend_days)]
    half = model.sum_half_width(remaining, _calibrated_z(scores, z, level))
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


@dataclass(frozen=True)
class _Replay:
    end: date  # last day of the horizon window
    error: Decimal  # |actual - predicted| / actual
    score: Decimal  # |actual - predicted| / (interval half-width at z = 1)
    predicted: Decimal
    actual: Decimal
    unit: Decimal


def _replay(dense: list[tuple[date, int]], horizon: int, min_history: int, trend_days: int) -> list[_Replay]:
    out = []
    for i in range(min_history, len(dense) - horizon + 1):
        model = _fit(dense[:i], trend_days)
        window = dense[i : i + horizon]
        predicted = sum((model.predict(d) for d, _ in window), Decimal(0))
        actual = Decimal(sum(v for _, v in window))
        unit = model.sum_half_width([d for d, _ in window], Decimal(1))
        if actual == 0:
            continue
        score = abs(actual - predicted) / unit if unit else Decimal(0)
        out.append(_Replay(window[-1][0], abs(predicted - actual) / actual, score, predicted, actual, unit))
    return out


_MIN_CALIBRATION = 10
_MAX_Z = Decimal(100)


def _calibrated_z(scores: Sequence[Decimal], z: Decimal, level: Decimal) -> Decimal:
    """Split-conformal multiplier: the ceil((n+1) x level)-th smallest past score.

    Falls back to ``z`` with fewer than 10 past scores.
    """
    if len(scores) < _MIN_CALIBRATION:
        return z
    ordered = sorted(scores)
    k = min(len(ordered), int((Decimal(len(ordered) + 1) * level).to_integral_value(rounding="ROUND_CEILING")))
    return min(max(ordered[k - 1], Decimal("0.1")), _MAX_Z)


def backtest(
    series: Sequence[tuple[date, int]],
    horizon_days: int = 7,
    min_history: int = 21,
    trend_days: int = 28,
    level: Decimal = Decimal("0.8"),
) -> Backtest | None:
    """Replay the model from every origin with ``min_history`` days behind it.

    Coverage is out of sample: each origin's interval is calibrated only on replays whose
    windows had ended before that origin.

    Returns:
        The error figures, or ``None`` when the history is too short.
    """
    if not series:
        return None
    first, last = min(d for d, _ in series), max(d for d, _ in series)
    replays = _replay(_dense(series, first, last), horizon_days, min_history, trend_days)
    if not replays:
        return None
    covered = 0
    for r in replays:
        origin = r.end - timedelta(days=horizon_days - 1)
        past = [p.score for p in replays if p.end < origin]
        half = _calibrated_z(past, Z_80, level) * r.unit
        covered += r.predicted - half <= r.actual <= r.predicted + half
    hundred = Decimal(100)
    return Backtest(
        origins=len(replays),
        horizon_days=horizon_days,
        mape=(sum((r.error for r in replays), Decimal(0)) / len(replays) * hundred).quantize(Decimal("0.01")),
        coverage=(Decimal(covered) / len(replays) * hundred).quantize(Decimal("0.1")),
    )
