"""Cost-allocation splits over traces. Pure; every split sums exactly to the amount split.

A trace is a tree of spans (requests) that share ``trace_id``; each span belongs to a
*party* (project, department or service) and has a cost. Methods:

* ``direct``: the initiator (the party of the trace's root span) pays for the whole trace;
* ``proportional``: each party pays in proportion to the cost of its own spans;
* ``weighted``: the amount is split by configured weights among the parties present;
* ``hybrid``: per trace, the root span's cost (the primary inference) goes to the initiator
  and the rest is split among the downstream parties by configured ratios (by their span
  cost where no ratio is configured).

The amount split can be any figure (the bill total in nano-USD, a currency amount, a credit):
the methods produce weights, and :func:`largest_remainder` turns them into integers that
sum exactly to it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

Method = Literal["direct", "proportional", "weighted", "hybrid"]
METHODS: tuple[Method, ...] = ("direct", "proportional", "weighted", "hybrid")


@dataclass(frozen=True)
class Span:
    """One priced request inside a trace."""

    trace_id: str
    span_id: str
    parent_span_id: str
    party: str
    cost_nanos: int


def largest_remainder(total: int, weights: Sequence[int | Decimal | Fraction]) -> list[int]:
    """Split integer ``total`` proportionally to ``weights`` into integers summing to ``total``.

    Each share is its exact quota rounded down; the units left over go to the largest
    fractional remainders (ties to the lower index), so every share is within one unit of
    its exact quota. All-zero weights split equally.

    Raises:
        ValueError: Negative total or weight, or no weights.
    """
    if not weights:
        raise ValueError("no weights")
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("total and weights must be non-negative")
    fw = [Fraction(w) for w in weights]
    whole = sum(fw)
    if whole == 0:
        fw, whole = [Fraction(1)] * len(fw), Fraction(len(fw))
    quotas = [total * w / whole for w in fw]
    shares = [q.numerator // q.denominator for q in quotas]
    left = total - sum(shares)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def _roots(spans: Sequence[Span]) -> Span:
    ids = {s.span_id for s in spans}
    for s in spans:
        if not s.parent_span_id or s.parent_span_id not in ids:
            return s
    return spans[0]  # a cycle: take the first span as the initiator


def _by_trace(spans: Iterable[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        traces[s.trace_id].append(s)
    return traces


def _proportional(spans: Sequence[Span]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = defaultdict(Fraction)
    for s in spans:
        out[s.party] += s.cost_nanos
    return out


def _weighted(spans: Sequence[Span], weights: Mapping[str, Decimal]) -> dict[str, Fraction]:
    return {p: Fraction(weights.get(p, Decimal(0))) for p in sorted({s.party for s in spans})}


def _direct(spans: Sequence[Span]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = defaultdict(Fraction)
    for trace in _by_trace(spans).values():
        out[_roots(trace).party] += sum(s.cost_nanos for s in trace)
    return out


def _hybrid(spans: Sequence[Span], ratios: Mapping[str, Decimal]) -> dict[str, Fraction]:
    out: dict[str, Fraction] = defaultdict(Fraction)
    for trace in _by_trace(spans).values():
        root = _roots(trace)
        out[root.party] += root.cost_nanos
        rest = [s for s in trace if s is not root]
        if not rest:
            continue
        rest_cost = sum(s.cost_nanos for s in rest)
        parties = sorted({s.party for s in rest})
        # Configured ratios among the downstream parties present; else their own span cost.
        if any(p in ratios for p in parties):
            shares = {p: Fraction(ratios.get(p, Decimal(0))) for p in parties}
        else:
            shares = _proportional(rest)
        denom = sum(shares.values())
        for p in parties:
            out[p] += rest_cost * shares[p] / denom if denom else Fraction(rest_cost, len(parties))
    return out


def party_weights(
    spans: Iterable[Span],
    method: Method,
    weights: Mapping[str, Decimal] | None = None,
    hybrid_ratios: Mapping[str, Decimal] | None = None,
) -> dict[str, Fraction]:
    """Weight of each party under ``method`` (exact fractions, in nano-USD of span cost)."""
    spans = list(spans)
    if method == "proportional":
        return dict(_proportional(spans))
    if method == "weighted":
        return _weighted(spans, weights or {})
    if method == "direct":
        return dict(_direct(spans))
    if method == "hybrid":
        return dict(_hybrid(spans, hybrid_ratios or {}))
    raise ValueError(f"unknown allocation method {method!r}")


def allocate(
    amount: int,
    spans: Iterable[Span],
    method: Method,
    weights: Mapping[str, Decimal] | None = None,
    hybrid_ratios: Mapping[str, Decimal] | None = None,
) -> dict[str, int]:
    """Split ``amount`` (integer nano-units) across parties; the values sum exactly to it.

    Returns:
        ``{party: nanos}`` sorted by party name.
    """
    pw = party_weights(spans, method, weights, hybrid_ratios)
    if not pw:
        if amount:
            raise ValueError("nothing to allocate to")
        return {}
    parties = sorted(pw)
    shares = largest_remainder(amount, [pw[p] for p in parties])
    return dict(zip(parties, shares, strict=True))
