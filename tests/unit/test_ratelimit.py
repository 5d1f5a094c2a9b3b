"""GCRA buckets: exact for requests and tokens, all-or-nothing across a request's buckets, corrected at completion."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenledger.control.records import RateLimit
from tokenledger.ratelimit import LocalLimiter, gcra, plan

LABELS = {"tenant": "acme", "user": "u1", "api_key": "k1"}


def test_a_full_bucket_admits_the_limit_then_refills_continuously() -> None:
    tat = None
    admitted = 0
    for _ in range(70):
        ok, new_tat, _, _, _ = gcra(tat, 0.0, 1, 60, 60.0)
        if ok:
            tat, admitted = new_tat, admitted + 1
    assert admitted == 60
    ok, _, _, _, retry = gcra(tat, 0.0, 1, 60, 60.0)
    assert not ok and retry == 1.0  # one unit comes back every second
    assert gcra(tat, 1.0, 1, 60, 60.0)[0]


def test_remaining_and_reset_as_headers_say_them() -> None:
    ok, tat, remaining, reset, _ = gcra(None, 100.0, 1_000, 10_000, 60.0)
    assert (ok, remaining, reset) == (True, 9_000, 6.0)
    ok, _, remaining, _, retry = gcra(tat, 100.0, 9_500, 10_000, 60.0)
    assert (ok, remaining, retry) == (False, 9_000, 3.0)


def test_a_request_larger_than_the_limit_is_never_admitted() -> None:
    ok, _, _, _, retry = gcra(None, 0.0, 20_000, 10_000, 60.0)
    assert not ok and retry == float("inf")


@dataclass
class Run:
    admitted_units: int = 0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 200),
    st.lists(st.tuples(st.floats(0, 5), st.integers(1, 50)), min_size=1, max_size=300),
)
def test_over_any_run_at_most_limit_plus_rate_times_duration(limit: int, arrivals: list[tuple[float, int]]) -> None:
    """Admitted units over a run of D seconds never exceed L + L·D/P, whatever the arrivals."""
    tat, now, admitted = None, 0.0, 0
    for gap, cost in arrivals:
        now += gap
        ok, new_tat, _, _, _ = gcra(tat, now, cost, limit, 60.0)
        if ok:
            tat, admitted = new_tat, admitted + cost
    assert admitted <= limit + limit * now / 60.0 + 1e-6


def test_all_buckets_or_none_and_corrections() -> None:
    per_user = RateLimit(id="each-user", tenant="acme", scope={"user_id": "*"}, requests=2, tokens=1_000)
    per_key = RateLimit(id="key-k1", tenant="acme", scope={"api_key": "k1"}, tokens=1_500, concurrent=2)
    lim = LocalLimiter()
    first = plan([per_user, per_key], LABELS, "gpt-4o", 300, 500)
    assert [c.key for c in first.charges] == [
        "each-user|u1|requests|minute",
        "each-user|u1|tokens|minute",
        "key-k1||tokens|minute",
    ]
    assert lim.admit(first, 1, 0.0).admitted
    # The key's bucket would take a second 800 tokens but the user's (1,000) would not: neither is charged.
    refused = lim.admit(first, 2, 0.0)
    assert (refused.admitted, refused.limited_by, refused.kind) == (False, "each-user", "tokens")
    assert lim.usage("key-k1||tokens|minute", 0.0, 1_500, 60.0) == 800
    # The first call used 100 + 50 tokens: 650 given back at completion, so the second fits.
    lim.correct([(c, 150 if c.kind == "tokens" else 1) for c in first.charges], 0.0)
    assert lim.usage("each-user|u1|tokens|minute", 0.0, 1_000, 60.0) == 150
    assert lim.admit(first, 2, 0.0).admitted
    # Two in flight: a third is refused for concurrency until one completes.
    other = plan([per_key], {**LABELS, "user": "u2"}, "gpt-4o", 10, 10)
    assert lim.admit(other, 3, 0.0).kind == "concurrent"
    lim.release(first, 1)
    assert lim.admit(other, 3, 0.0).admitted


def test_another_user_has_a_bucket_of_its_own() -> None:
    per_user = RateLimit(id="each-user", tenant="acme", scope={"user_id": "*"}, requests=1)
    lim = LocalLimiter()
    rnd = random.Random(3)
    users = [f"u{rnd.randrange(5)}" for _ in range(50)]
    admitted = [
        u for i, u in enumerate(users) if lim.admit(plan([per_user], {**LABELS, "user": u}, "m", 1, 1), i, 0.0).admitted
    ]
    assert sorted(admitted) == sorted(set(users))
