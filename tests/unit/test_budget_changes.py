"""Budget changes interleaved with spend: the spend stage's record equals evaluating the history from scratch.

A random history of requests and budget changes (create, raise, lower, change levels, delete,
create again) is run twice:

* through :func:`stream_jobs.budget_record.step`, as the spend agent does it: requests in
  deltas of random sizes, each change as its own marker, with crashes that lose a record write
  (the delta is replayed; its outputs are sent again);
* through a reference written from the rules, request by request (:func:`evaluate`, the
  per-request rule) and change by change (levels the spend no longer reaches are re-armed,
  levels it reaches and had not announced cross now, the breaker is republished; a deleted
  budget's breaker is withdrawn; a budget created again starts from the spend stored so far).

The thresholds and breakers the committed steps publish equal the reference's, in order, and a
replayed step publishes exactly what its lost first attempt published.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_jobs.budget_record import Withdrawn, step
from tokenledger.budget_eval import (
    LEVEL_ORDER,
    BreakerUpdate,
    BudgetStatus,
    ThresholdCrossing,
    evaluate,
    level_thresholds,
)
from tokenledger.control.records import ControlBudget, digest

START = datetime(2026, 11, 10, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
LEVELS = [("0.5", "0.8"), ("0.2", "0.9"), ("0.7", "0.75")]


def budget(limit: str, levels: tuple[str, str] = LEVELS[0]) -> ControlBudget:
    return ControlBudget(
        id="b",
        tenant="acme",
        limit_usd=Decimal(limit),
        levels={"warn": levels[0], "throttle": levels[1], "break": "1"},
    )


def at(i: int) -> datetime:
    return START + timedelta(minutes=i)


Out = tuple[Any, ...]


def summary(out: Any) -> Out:
    if isinstance(out, Withdrawn):
        return ("withdrawn",)
    if isinstance(out, BreakerUpdate):
        return ("breaker", out.state, out.spent_nanos, out.limit_nanos)
    assert isinstance(out, ThresholdCrossing)
    return ("threshold", out.level, out.spent_nanos, out.limit_nanos)


def reference(ops: list[tuple[str, Any]]) -> list[Out]:
    """Request by request, change by change, from the rules."""
    first = budget("1")
    defn: ControlBudget | None = first
    status: BudgetStatus | None = None
    spent = 0
    stored: list[tuple[int, int]] = []  # every request so far: (minute, nano-USD), as the store holds them
    out: list[Out] = [("breaker", "normal", 0, first.limit_nanos)]  # the first marker: a normal breaker

    def request(i: int, nanos: int) -> None:
        nonlocal spent, status
        assert defn is not None
        spent += nanos
        status, crossings, breaker = evaluate(defn, status, spent, at(i), "UTC")
        out.extend([summary(c) for c in crossings] + ([summary(breaker)] if breaker else []))

    for kind, arg in ops:
        if kind == "event":
            stored.append(arg)
            if defn is not None:
                request(*arg)
        elif kind == "delete":
            out.append(("withdrawn",))
            defn, status, spent = None, None, 0
        elif kind == "change" and defn is not None and (arg.limit_usd, arg.levels) == (defn.limit_usd, defn.levels):
            continue  # the same definition again: not a change
        else:  # create (starting from the stored spend), or a change of limit or levels
            defn = arg
            if kind == "create":
                status, spent = None, 0
                for i, nanos in stored:
                    request(i, nanos)
            if status is None:
                out.append(("breaker", "normal", 0, defn.limit_nanos))
            else:
                status = _redefined(defn, status, spent, out)
    return out


def _redefined(defn: ControlBudget, status: BudgetStatus, spent: int, out: list[Out]) -> BudgetStatus:
    """The rule for a changed definition, written out: re-arm, cross, republish."""
    th = level_thresholds(defn)
    kept = tuple(lv for lv in status.emitted if spent >= th[lv])
    crossed = tuple(lv for lv in LEVEL_ORDER if spent >= th[lv] and lv not in kept)
    state = "normal"
    for lv in LEVEL_ORDER:
        if spent >= th[lv]:
            state = lv
    out.extend(("threshold", lv, spent, defn.limit_nanos) for lv in crossed)
    out.append(("breaker", state, spent, defn.limit_nanos))
    return replace(status, emitted=(*kept, *crossed), state=state, published_spent=spent)  # type: ignore[arg-type]


def system(ops: list[tuple[str, Any]], rnd: random.Random) -> tuple[list[Out], int]:
    """The spend agent's record through deltas of random sizes, markers and lost writes."""
    defn: ControlBudget | None = budget("1")
    doc: dict[str, Any] | None = None
    out: list[Out] = []
    replays = 0
    stored: list[tuple[int, int]] = []
    position = 0

    def apply(entries: list[tuple[int, int, int, int]], now: datetime) -> None:
        nonlocal doc, replays
        wanted = None if defn is None else digest(defn)
        while True:
            new, produced, _ = step("b", defn, doc, entries, wanted=wanted, now=now, tz=UTC_ZONE, tz_name="UTC")
            if rnd.random() < 0.2:  # crash after sending, before the record is durable: replayed
                again, reproduced, _ = step("b", defn, doc, entries, wanted=wanted, now=now, tz=UTC_ZONE, tz_name="UTC")
                assert [summary(o) for o in reproduced] == [summary(o) for o in produced]
                assert again == new
                replays += 1
                continue
            out.extend(summary(o) for o in produced)
            if new is not None:
                doc = new
            return

    apply([], START)  # the first marker
    pending: list[tuple[int, int, int, int]] = []
    for kind, arg in ops:
        if kind == "event":
            i, nanos = arg
            stored.append((i, nanos))
            if defn is not None:
                pending.append(
                    (0, position, int((at(i) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6), nanos)
                )
            position += 1
            if pending and rnd.random() < 0.4:
                apply(pending, START)
                pending = []
            continue
        if pending:
            apply(pending, START)
            pending = []
        if kind == "delete":
            defn = None
        elif kind == "create":  # through the admin API: counting from now, the stored spend as opening
            opening = tuple((int(at(i).timestamp()), n) for i, n in stored)
            defn = arg.model_copy(update={"counts_from": at(position), "opening": opening})
        else:
            defn = arg.model_copy(update={"counts_from": defn.counts_from, "opening": defn.opening}) if defn else arg
        apply([], START)  # its marker
    if pending:
        apply(pending, START)
    return out, replays


@st.composite
def histories(draw: Any) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    alive = True
    minute = 0
    for _ in range(draw(st.integers(1, 40))):
        roll = draw(st.integers(0, 9))
        if roll < 6:
            ops.append(("event", (minute, draw(st.integers(1, 400_000_000)))))
            minute += 1
        elif roll < 8 and alive:
            limit = draw(st.sampled_from(["0.5", "1", "2", "5"]))
            ops.append(("change", budget(limit, draw(st.sampled_from(LEVELS)))))
        elif alive:
            ops.append(("delete", None))
            alive = False
        else:
            ops.append(("create", budget(draw(st.sampled_from(["1", "3"])))))
            alive = True
    return ops


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(0, 2**32))
def test_changes_interleaved_with_spend_equal_the_history_from_scratch(ops: list[tuple[str, Any]], seed: int) -> None:
    got, _ = system(ops, random.Random(seed))
    assert got == reference(ops)


def test_a_lowered_limit_breaks_at_once_and_a_raised_one_unbreaks() -> None:
    ops: list[tuple[str, Any]] = [("event", (i, 100_000_000)) for i in range(7)]  # 0.70 USD of 1
    ops += [("change", budget("0.5")), ("change", budget("10")), ("change", budget("10", ("0.05", "0.8")))]
    got, _ = system(ops, random.Random(1))
    assert got == reference(ops)
    assert got[-6:] == [
        ("threshold", "throttled", 700_000_000, 500_000_000),  # lowered below the spend: broken at once
        ("threshold", "broken", 700_000_000, 500_000_000),
        ("breaker", "broken", 700_000_000, 500_000_000),
        ("breaker", "normal", 700_000_000, 10_000_000_000),  # raised: normal; throttled, broken re-armed
        ("threshold", "warning", 700_000_000, 10_000_000_000),  # new levels: warning at 5 % = 0.5 USD, crossed again
        ("breaker", "warning", 700_000_000, 10_000_000_000),
    ]
