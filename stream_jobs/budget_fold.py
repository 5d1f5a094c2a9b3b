"""One budget's delta entries folded in request by request: spend, status, crossings, breakers. Pure.

Equal, output for output, to calling :func:`tokenledger.budget_eval.evaluate` after every
request (``tests/unit/test_budget_fold.py``), but a request that can change nothing is only
added up. While a budget stays in its status's period (always, for a rolling window), an
evaluation changes only the spend and the watermark as long as the spend stays inside an
interval computed once per full evaluation: at or above the current state's threshold and
every announced level's, below the next level's and every level not yet announced, and less
than one ``publish_step`` from the spend the last breaker carried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from stream_jobs.spend_state import SpendFold, keys_of_us, spent
from tokenledger.budget_eval import (
    LEVEL_ORDER,
    BreakerUpdate,
    BudgetStatus,
    ThresholdCrossing,
    breaker_for,
    evaluate,
    evaluate_late,
    level_thresholds,
    period_of,
    publish_step_nanos,
)
from tokenledger.windows import ROLLING

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Output = ThresholdCrossing | BreakerUpdate
_NO_LIMIT = 1 << 127
# A budget keeps the spend of its recent calendar periods (a dimension key keeps two): a late
# event of a period the budget has left is still folded into that period's spend and crossings.
BUDGET_KEEP_DAYS = 40
BUDGET_KEEP_MONTHS = 3


def fold_budget(
    budget: Any,
    state: dict[str, Any] | None,
    status: BudgetStatus | None,
    entries: Sequence[tuple[int, int, int, int]],
    *,
    tz: ZoneInfo,
    tz_name: str,
) -> tuple[dict[str, Any], BudgetStatus | None, list[Output]]:
    """Fold entries ``(raw partition, position, epoch µs, nano-USD)`` into a budget, in order.

    Returns:
        The budget scope's spend state, the new status, and the crossings and breaker updates
        to publish, in the order request-by-request evaluation produces them.
    """
    fold = SpendFold(state, keep_days=BUDGET_KEEP_DAYS, keep_months=BUDGET_KEEP_MONTHS)
    out: list[Output] = []
    calendar = budget.period not in ROLLING
    slot = 0 if budget.period == "day" else 1  # FoldKeys: the day key, then the month key
    lo, hi = 0, -1  # the quiet interval of the current status (empty: evaluate)
    as_of_us = _us(status.as_of) if status is not None and status.as_of is not None else None
    last_spent = None  # spend of skipped requests, not yet written into ``status``
    for entry in entries:
        at_us, nanos = entry[2], entry[3]
        keys = keys_of_us(at_us, tz)
        fold.add_keys(keys, nanos)
        if status is not None:
            if calendar:
                pkey = keys[0] if slot == 0 else keys[1]
                now_spent = (fold.day if slot == 0 else fold.month).get(pkey, 0) if pkey == status.period_key else -1
            elif at_us >= 0 and as_of_us is not None:
                now_spent = _rolling_spent(fold.view(), budget.period, max(at_us, as_of_us))
            else:
                now_spent = -1
            if lo <= now_spent < hi:
                last_spent = now_spent
                if as_of_us is None or at_us > as_of_us:
                    as_of_us = at_us
                continue
        if status is not None and last_spent is not None:
            status = replace(status, spent_nanos=last_spent, as_of=_at(as_of_us))
        last_spent = None
        status, produced = _step(budget, status, fold, EPOCH + timedelta(microseconds=at_us), tz=tz, tz_name=tz_name)
        out.extend(produced)
        as_of_us = _us(status.as_of) if status is not None and status.as_of is not None else None
        lo, hi = _quiet(budget, status) if status is not None else (0, -1)
    if status is not None and last_spent is not None:
        status = replace(status, spent_nanos=last_spent, as_of=_at(as_of_us))
    return fold.state(), status, out


def _step(
    budget: Any,
    status: BudgetStatus | None,
    fold: SpendFold,
    at: datetime,
    *,
    tz: ZoneInfo,
    tz_name: str,
) -> tuple[BudgetStatus | None, list[Output]]:
    """One request's full evaluation (the spend agent's rule before this module)."""
    period_key, _ = period_of(budget, at, tz_name)
    if status is not None and budget.period not in ROLLING and period_key < status.period_key:
        # A late event of a period the budget has left (another partition ran ahead): it counts
        # in that period's spend and crossings; the open period's state and breaker are unchanged.
        late_status, crossings = evaluate_late(
            budget, status, period_key, spent(fold.view(), budget.period, at, tz), at
        )
        return late_status, list(crossings)
    # Evaluate at the budget's watermark: entries of several partitions arrive interleaved, and
    # a rolling window or a crossing time must not move backwards with an older event.
    now = max(at, status.as_of) if status is not None and status.as_of is not None else at
    new_status, crossings, breaker = evaluate(budget, status, spent(fold.view(), budget.period, now, tz), now, tz_name)
    produced: list[Output] = [*crossings]
    if breaker is not None:
        produced.append(breaker)
    return new_status, produced


def _rolling_spent(view: dict[str, Any], period: str, now_us: int) -> int:
    """``spent`` of a rolling window at ``now_us`` (epoch µs, not before 1970), without a datetime."""
    length_s, width_s, source = (3_600, 60, view["minute"]) if period == "rolling_1h" else (86_400, 3_600, view["hour"])
    horizon = (now_us // 1_000_000 - length_s) // width_s * width_s
    return sum(v for k, v in source.items() if int(k) > horizon)


def _quiet(budget: Any, status: BudgetStatus) -> tuple[int, int]:
    """``[lo, hi)``: spends of the status's period at which evaluating changes only spend and watermark."""
    thresholds = level_thresholds(budget)
    lo, hi = 0, _NO_LIMIT
    for level in LEVEL_ORDER:
        th = thresholds[level]
        if level not in status.emitted:
            hi = min(hi, th)  # a crossing
        else:
            lo = max(lo, th)  # below it: a rolling window re-arms the level
        if LEVEL_ORDER.index(level) <= _RANK[status.state]:
            lo = max(lo, th)  # below it: a lower state
        else:
            hi = min(hi, th)  # a higher state
    step = publish_step_nanos(budget)
    return max(lo, status.published_spent - step + 1), min(hi, status.published_spent + step)


_RANK = {"normal": -1, "warning": 0, "throttled": 1, "broken": 2}
_MICROSECOND = timedelta(microseconds=1)


def _us(at: datetime) -> int:
    return (at - EPOCH) // _MICROSECOND


def _at(at_us: int | None) -> datetime | None:
    return None if at_us is None else EPOCH + timedelta(microseconds=at_us)


OPENING_PARTITION = -1  # opening-spend entries of a budget created while running: a source partition of their own


def opening_entries(budget: Any) -> list[tuple[int, int, int, int]]:
    """A budget's opening spend (``(minute epoch s, nano-USD)``) as entries of :data:`OPENING_PARTITION`."""
    return [(OPENING_PARTITION, i, minute * 1_000_000, nanos) for i, (minute, nanos) in enumerate(budget.opening)]


def redefine(
    budget: Any,
    state: dict[str, Any] | None,
    status: BudgetStatus | None,
    now: datetime,
    *,
    tz: ZoneInfo,
    tz_name: str,
) -> tuple[BudgetStatus | None, list[Output]]:
    """A budget's definition changed (or it is new): its status under the new definition.

    A budget without a status yet (no spend folded) keeps none: it is announced with a normal
    breaker at ``now`` (gateways learn budgets from the breakers topic), but its status starts
    with its first event, so the wall clock never becomes its event-time watermark.

    Evaluated at the status's event-time watermark (``now`` for a budget without one) with the
    spend the state holds. Levels the spend no longer reaches under the new thresholds are
    re-armed, levels it reaches and had not announced are crossed now, levels announced and
    still reached are not announced again: each level of the current definition once per
    period. The breaker is always published (limit, levels or enforcement changed): a raised
    limit un-breaks the budget, a lowered one breaks it at once.
    """
    if status is None:
        _, _, first = evaluate(budget, None, 0, now, tz_name)
        return None, [] if first is None else [first]
    at = status.as_of if status.as_of is not None else now
    fold = SpendFold(state, keep_days=BUDGET_KEEP_DAYS, keep_months=BUDGET_KEEP_MONTHS)
    spend = spent(fold.view(), budget.period, at, tz)
    reached = level_thresholds(budget)
    status = replace(status, emitted=tuple(lv for lv in status.emitted if spend >= reached[lv]))
    new_status, crossings, breaker = evaluate(budget, status, spend, at, tz_name)
    if breaker is None:
        new_status = replace(new_status, published_spent=spend)
        breaker = breaker_for(budget, new_status, at)
    return new_status, [*crossings, breaker]
