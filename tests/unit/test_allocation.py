from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.allocation import METHODS, Method, Span, allocate, largest_remainder, party_weights

# Trace t1: gateway (root, 600) calls search (300) which calls rerank (100).
# Trace t2: chat (root, 1000) alone.
SPANS = [
    Span("t1", "a", "", "gateway", 600),
    Span("t1", "b", "a", "search", 300),
    Span("t1", "c", "b", "rerank", 100),
    Span("t2", "d", "", "chat", 1000),
]


def test_largest_remainder_exact_and_fair() -> None:
    assert largest_remainder(100, [1, 1, 1]) == [34, 33, 33]
    assert largest_remainder(10, [Decimal("0.5"), Decimal("0.25"), Decimal("0.25")]) == [5, 3, 2]
    assert largest_remainder(7, [0, 0]) == [4, 3]
    assert largest_remainder(0, [5, 7]) == [0, 0]
    with pytest.raises(ValueError):
        largest_remainder(-1, [1])


def test_direct_initiator_pays() -> None:
    assert allocate(2000, SPANS, "direct") == {"chat": 1000, "gateway": 1000}


def test_proportional_by_span_cost() -> None:
    # Split a 1 USD invoice (incl. untraced overhead) in proportion to span cost.
    assert allocate(1_000_000_000, SPANS, "proportional") == {
        "chat": 500_000_000,
        "gateway": 300_000_000,
        "rerank": 50_000_000,
        "search": 150_000_000,
    }


def test_weighted_configured() -> None:
    w = {"gateway": Decimal(2), "search": Decimal(1), "rerank": Decimal(1), "chat": Decimal(0)}
    assert allocate(1001, SPANS, "weighted", weights=w) == {
        "chat": 0,
        "gateway": 501,
        "rerank": 250,
        "search": 250,
    }


def test_hybrid_primary_to_initiator_rest_by_ratio() -> None:
    ratios = {"search": Decimal("0.75"), "rerank": Decimal("0.25")}
    assert party_weights(SPANS, "hybrid", hybrid_ratios=ratios) == {
        "gateway": Fraction(600),
        "search": Fraction(300),
        "rerank": Fraction(100),
        "chat": Fraction(1000),
    }
    assert allocate(2000, SPANS, "hybrid", hybrid_ratios={"search": Decimal(1), "rerank": Decimal(1)}) == {
        "chat": 1000,
        "gateway": 600,
        "rerank": 200,
        "search": 200,
    }


spans_strategy = st.lists(
    st.builds(
        Span,
        trace_id=st.sampled_from(["t1", "t2", "t3"]),
        span_id=st.text("abcdef", min_size=1, max_size=2),
        parent_span_id=st.text("abcdef", max_size=2),
        party=st.sampled_from(["p1", "p2", "p3", "p4"]),
        cost_nanos=st.integers(0, 10**12),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(0, 10**15),
    spans=spans_strategy,
    method=st.sampled_from(METHODS),
    w=st.dictionaries(st.sampled_from(["p1", "p2", "p3", "p4"]), st.decimals(0, 100, places=3)),
)
def test_splits_sum_exactly_and_stay_within_one_nano(
    amount: int, spans: list[Span], method: Method, w: dict[str, Decimal]
) -> None:
    result = allocate(amount, spans, method, weights=w, hybrid_ratios=w)
    assert sum(result.values()) == amount
    assert all(v >= 0 for v in result.values())
    pw = party_weights(spans, method, w, w)
    whole = sum(pw.values())
    for party, share in result.items():
        exact = amount * pw[party] / whole if whole else Fraction(amount, len(pw))
        assert abs(share - exact) < 1
    assert allocate(amount, list(reversed(spans)), method, w, w) == result or method in ("direct", "hybrid")
