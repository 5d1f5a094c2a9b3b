"""Budget evaluation: spend x budget x clock -> state, threshold crossings, breaker updates. Pure.

A budget is ``normal`` below its warn level, then ``warning``, ``throttled``, ``broken``.
Each level crossing is emitted exactly once per budget per period; the breaker (the state a
gateway enforces) is published whenever the state or the period changes, including the
return to ``normal`` when a new calendar period starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from tokenledger.budgets import Budget
from tokenledger.money import units_text
from tokenledger.windows import ROLLING, window_of

Level = Literal["warning", "throttled", "broken"]
State = Literal["normal", "warning", "throttled", "broken"]
LEVEL_ORDER: tuple[Level, ...] = ("warning", "throttled", "broken")


@dataclass(frozen=True)
class BudgetStatus:
    """What is remembered per budget between events (a Faust table value)."""

    budget_id: str
    period_key: str
    period_end: datetime | None  # None for rolling windows
    spent_nanos: int
    state: State
    emitted: tuple[Level, ...]  # levels already announced in this period
    published_spent: int = 0  # spend carried by the last breaker published
    as_of: datetime | None = None  # watermark: the latest event time evaluated
    # Levels announced in earlier calendar periods, ``((period_key, levels), ...)`` newest last:
    # a late event of a period the budget has left still crosses that period's levels, once each.
    past: tuple[tuple[str, tuple[Level, ...]], ...] = ()


PAST_PERIODS_KEPT = 40  # more than the 30-day event-time window in days (and in months)


def _remember(
    past: tuple[tuple[str, tuple[Level, ...]], ...], period_key: str, levels: tuple[Level, ...]
) -> tuple[tuple[str, tuple[Level, ...]], ...]:
    kept = {k: v for k, v in past if k != period_key}
    kept[period_key] = levels
    return tuple(sorted(kept.items())[-PAST_PERIODS_KEPT:])


@dataclass(frozen=True)
class ThresholdCrossing:
    """A level reached for the first time in a period (topic ``thresholds``)."""

    budget_id: str
    level: Level
    period_key: str
    spent_nanos: int
    limit_nanos: int
    at: datetime


@dataclass(frozen=True)
class BreakerUpdate:
    """The state a gateway enforces (compacted topic ``breakers``, key = budget id)."""

    budget_id: str
    tenant: str
    scope: dict[str, str]
    state: State
    spent_nanos: int
    limit_nanos: int
    remaining_nanos: int
    warn_nanos: int
    throttle_nanos: int
    period: str
    period_key: str
    period_end: datetime | None
    downgrade_model: str | None
    max_tokens_per_request: int | None
    whitelist_features: tuple[str, ...]
    fail_open: bool
    updated_at: datetime

    def to_json(self) -> dict[str, object]:
        """Wire form: nanos as ints plus exact USD strings."""
        return {
            "budget_id": self.budget_id,
            "tenant": self.tenant,
            "scope": self.scope,
            "state": self.state,
            "spent_nanos": self.spent_nanos,
            "limit_nanos": self.limit_nanos,
            "remaining_nanos": self.remaining_nanos,
            "remaining_usd": units_text(self.remaining_nanos),
            "warn_nanos": self.warn_nanos,
            "throttle_nanos": self.throttle_nanos,
            "period": self.period,
            "period_key": self.period_key,
            "period_end": self.period_end.isoformat() if self.period_end else None,
            "downgrade_model": self.downgrade_model,
            "max_tokens_per_request": self.max_tokens_per_request,
            "whitelist_features": list(self.whitelist_features),
            "fail_open": self.fail_open,
            "updated_at": self.updated_at.isoformat(),
        }


def level_thresholds(budget: Budget) -> dict[Level, int]:
    """Nano-USD at which each level starts (do not modify the returned dict: it is shared)."""
    lv = budget.levels
    key = (budget.limit_nanos, lv.warn, lv.throttle, lv.break_)
    found = _THRESHOLDS.get(key)
    if found is None:
        limit = Decimal(budget.limit_nanos)
        found = _THRESHOLDS[key] = {
            "warning": int(limit * lv.warn),
            "throttled": int(limit * lv.throttle),
            "broken": int(limit * lv.break_),
        }
    return found


def publish_step_nanos(budget: Budget) -> int:
    """Spend movement (nano-USD) after which the breaker is published again."""
    key = (budget.limit_nanos, budget.publish_step)
    found = _STEPS.get(key)
    if found is None:
        found = _STEPS[key] = int(Decimal(budget.limit_nanos) * budget.publish_step)
    return found


# Evaluated once per budget and request on the hot path: the Decimal products are memoised (per
# limit and levels), and calendar windows in ``tokenledger.windows.window_at``.
_THRESHOLDS: dict[tuple[int, Decimal, Decimal, Decimal], dict[Level, int]] = {}
_STEPS: dict[tuple[int, Decimal], int] = {}


def state_for(budget: Budget, spent_nanos: int) -> State:
    """The state a spend puts the budget in."""
    state: State = "normal"
    for level, threshold in level_thresholds(budget).items():
        if spent_nanos >= threshold:
            state = level
    return state


def period_of(budget: Budget, at: datetime, tz_name: str) -> tuple[str, datetime | None]:
    """``(period_key, period_end)`` of the budget's period containing ``at``."""
    if budget.period in ROLLING:
        return budget.period, None
    found = window_of(at, budget.period, tz_name)  # type: ignore[arg-type]
    return found[2], found[3].end


def evaluate(
    budget: Budget, status: BudgetStatus | None, spent_nanos: int, now: datetime, tz_name: str
) -> tuple[BudgetStatus, list[ThresholdCrossing], BreakerUpdate | None]:
    """Fold the budget's current spend into its status.

    Args:
        budget: The budget definition.
        status: What was remembered (``None`` the first time).
        spent_nanos: Spend of the budget's scope in the period containing ``now``.
        now: The injected clock (event time for calendar periods).
        tz_name: Timezone of calendar periods.

    Returns:
        New status, crossings to emit (each level once per period), and a breaker update
        when the state or the period changed, or spend moved by ``publish_step`` of the
        limit since the last published breaker.
    """
    period_key, period_end = period_of(budget, now, tz_name)
    new_period = status is None or status.period_key != period_key
    emitted: tuple[Level, ...] = () if new_period or status is None else status.emitted
    state = state_for(budget, spent_nanos)
    thresholds = level_thresholds(budget)
    crossings, emitted = _cross(budget, period_key, spent_nanos, emitted, now)
    # Rolling windows fall back below a level as spend ages out: re-arm those levels.
    if budget.period in ROLLING:
        emitted = tuple(lv for lv in emitted if spent_nanos >= thresholds[lv])
    last = 0 if status is None or new_period else status.published_spent
    step = publish_step_nanos(budget)
    changed = status is None or new_period or status.state != state or abs(spent_nanos - last) >= step
    published = spent_nanos if changed else last
    past = () if status is None else status.past
    if status is not None and new_period and budget.period not in ROLLING:
        past = _remember(past, status.period_key, status.emitted)
    new_status = BudgetStatus(budget.id, period_key, period_end, spent_nanos, state, emitted, published, now, past)
    breaker = breaker_for(budget, new_status, now) if changed else None
    return new_status, crossings, breaker


def _cross(
    budget: Budget, period_key: str, spent_nanos: int, emitted: tuple[Level, ...], at: datetime
) -> tuple[list[ThresholdCrossing], tuple[Level, ...]]:
    """The levels ``spent_nanos`` reaches that ``emitted`` lacks, as crossings; and the levels announced after them."""
    crossings = []
    thresholds = level_thresholds(budget)
    for level in LEVEL_ORDER:
        if spent_nanos >= thresholds[level] and level not in emitted:
            crossings.append(ThresholdCrossing(budget.id, level, period_key, spent_nanos, budget.limit_nanos, at))
            emitted = (*emitted, level)
    return crossings, emitted


def evaluate_late(
    budget: Budget, status: BudgetStatus, period_key: str, spent_nanos: int, at: datetime
) -> tuple[BudgetStatus, list[ThresholdCrossing]]:
    """A late event of calendar period ``period_key``, earlier than the status's: that period's crossings.

    ``spent_nanos`` is the period's spend with the event. Each level of a period is announced
    once, whether the period was current or already left when the spend reached it, so the
    crossings of every period are the levels its spend reaches, whatever order partitions
    deliver events in. The state and the breaker stay the current period's.
    """
    crossings, emitted = _cross(budget, period_key, spent_nanos, dict(status.past).get(period_key, ()), at)
    if not crossings:
        return status, []
    return replace(status, past=_remember(status.past, period_key, emitted)), crossings


def breaker_for(budget: Budget, status: BudgetStatus, now: datetime) -> BreakerUpdate:
    """The breaker message for a status."""
    levels = level_thresholds(budget)
    return BreakerUpdate(
        budget_id=budget.id,
        tenant=budget.tenant,
        scope=dict(budget.scope),
        state=status.state,
        spent_nanos=status.spent_nanos,
        limit_nanos=budget.limit_nanos,
        remaining_nanos=max(0, budget.limit_nanos - status.spent_nanos),
        warn_nanos=levels["warning"],
        throttle_nanos=levels["throttled"],
        period=budget.period,
        period_key=status.period_key,
        period_end=status.period_end,
        downgrade_model=budget.downgrade_model,
        max_tokens_per_request=budget.max_tokens_per_request,
        whitelist_features=budget.whitelist_features,
        fail_open=budget.fail_open,
        updated_at=now.astimezone(UTC),
    )


def roll_over(budget: Budget, status: BudgetStatus, now: datetime, tz_name: str) -> BreakerUpdate | None:
    """On a clock tick: when ``now`` is in a new calendar period, the budget returns to normal."""
    period_key, _ = period_of(budget, now, tz_name)
    if budget.period in ROLLING or period_key == status.period_key:
        return None
    fresh, _, breaker = evaluate(budget, status, 0, now, tz_name)
    return breaker if fresh.state == "normal" else None


def matches(budget: Budget, tenant: str, labels: Mapping[str, str], model: str) -> bool:
    """Whether an event with these labels falls in the budget's scope."""
    return budget.tenant == tenant and scope_matches(budget.scope, labels, model)


def scope_matches(scope: Mapping[str, str], labels: Mapping[str, str], model: str) -> bool:
    """Whether labels and model satisfy every dimension of a scope (``user_id`` is the ``user`` label)."""
    for dim, value in scope.items():
        actual = model if dim == "model" else labels.get("user" if dim == "user_id" else dim)
        if actual != value:
            return False
    return True
