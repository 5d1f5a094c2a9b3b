"""Thresholds are a function of the events, not of the order partitions deliver them in.

Events of one budget arrive from several raw partitions, each in its own order; the spend stage
sees some interleaving of them, in batches. Whatever the interleaving, every calendar period
announces exactly the levels its total spend reaches, each once, and the budget ends in the
same period, spend and state. (The spend a crossing carries is the period's spend when the
level was first reached in that run: it depends on which event got there first.)
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_jobs.budget_fold import fold_budget
from tokenledger.budget_eval import BudgetStatus, ThresholdCrossing, level_thresholds, period_of
from tokenledger.budgets import Budget

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2026, 10, 27, 15, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def run(budget: Budget, order: list[tuple[int, int, int, int]], batches: list[int]) -> tuple[list[Any], BudgetStatus]:
    state: dict[str, Any] | None = None
    status: BudgetStatus | None = None
    out: list[Any] = []
    i = 0
    for size in [*batches, len(order)]:
        part = order[i : i + size]
        if part:
            state, status, produced = fold_budget(budget, state, status, part, tz=TZ, tz_name=TZ_NAME)
            out.extend(produced)
        i += size
    assert status is not None
    return out, status


def interleave(rng: random.Random, streams: list[list[tuple[int, int, int, int]]]) -> list[tuple[int, int, int, int]]:
    """A random merge keeping each partition's own order (one partition may run far ahead)."""
    queues = [list(s) for s in streams]
    merged: list[tuple[int, int, int, int]] = []
    bias = [rng.random() for _ in queues]
    while any(queues):
        live = [i for i, q in enumerate(queues) if q]
        i = rng.choices(live, weights=[bias[j] + 0.01 for j in live])[0]
        merged.append(queues[i].pop(0))
    return merged


@settings(max_examples=300, deadline=None)
@given(
    period=st.sampled_from(["day", "month"]),
    limit=st.sampled_from(["5", "20"]),
    events=st.lists(
        st.tuples(
            st.integers(0, 2),  # raw partition
            st.integers(0, 9 * 86_400),  # seconds from the start: ten days, a month end
            st.one_of(st.sampled_from([250_000_000, 1_000_000_000]), st.integers(0, 3_000_000_000)),
        ),
        min_size=1,
        max_size=150,
    ),
    seeds=st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)),
)
def test_crossings_do_not_depend_on_interleaving(
    period: str, limit: str, events: list[tuple[int, int, int]], seeds: tuple[int, int]
) -> None:
    budget = Budget.model_validate(
        {"id": "b", "tenant": "acme", "period": period, "limit_usd": Decimal(limit), "publish_step": Decimal("0.05")}
    )
    streams: list[list[tuple[int, int, int, int]]] = [[], [], []]
    for pos, (p, s, nanos) in enumerate(events):
        at_us = (START - EPOCH) // US + s * 1_000_000 + pos
        streams[p].append((p, pos, at_us, nanos))
    totals: dict[str, int] = {}
    for _p, s, nanos in events:
        key, _ = period_of(budget, START + timedelta(seconds=s), TZ_NAME)
        totals[key] = totals.get(key, 0) + nanos
    thresholds = level_thresholds(budget)
    expected = {(k, lv) for k, total in totals.items() for lv, th in thresholds.items() if total >= th}
    results = []
    for seed in seeds:
        rng = random.Random(seed)
        order = interleave(rng, streams)
        batches = [rng.randrange(1, 40) for _ in range(rng.randrange(0, 6))]
        out, status = run(budget, order, batches)
        crossings = [(c.period_key, c.level) for c in out if isinstance(c, ThresholdCrossing)]
        assert len(crossings) == len(set(crossings)), "a level announced twice in one period"
        assert set(crossings) == expected
        for c in out:
            if isinstance(c, ThresholdCrossing):
                assert thresholds[c.level] <= c.spent_nanos <= totals[c.period_key]
        last = max(totals)
        assert (status.period_key, status.spent_nanos) == (last, totals[last])
        results.append((sorted(crossings), status.period_key, status.spent_nanos, status.state))
    assert results[0] == results[1]
