"""Gateway decisions: states, throttle rule, reservations, overshoot bound, fail-open/closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tokenledger.guard import Guard, GuardRequest

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
LIMIT = 1_000_000_000  # 1 USD in nano-USD


def per_token(model: str, prompt: int, out: int, _now: datetime) -> int:
    """1,000 nano-USD per prompt token, 4,000 per output token (half for the mini model)."""
    rate = 1 if model.endswith("mini") else 2
    return rate * (500 * prompt + 2_000 * out)


def breaker(state: str = "normal", spent: int = 0, **kw: Any) -> dict[str, Any]:
    return {
        "budget_id": kw.pop("budget_id", "b1"),
        "tenant": "acme",
        "scope": kw.pop("scope", {"department": "research"}),
        "state": state,
        "spent_nanos": spent,
        "limit_nanos": LIMIT,
        "warn_nanos": LIMIT // 2,
        "throttle_nanos": LIMIT * 8 // 10,
        "period_end": kw.pop("period_end", END.isoformat()),
        "updated_at": kw.pop("updated_at", NOW.isoformat()),
        "downgrade_model": "gpt-4o-mini",
        "max_tokens_per_request": 100,
        "whitelist_features": ["incident"],
        "fail_open": kw.pop("fail_open", False),
        **kw,
    }


def guard_with(*docs: dict[str, Any], **kw: Any) -> Guard:
    g = Guard(per_token, **kw)
    for d in docs:
        g.apply(d, d["budget_id"], 0.0)
    g.bootstrapped = True
    return g


def req(
    feature: str = "chat", max_tokens: int = 200, prompt: int = 100, dept: str = "research", exempt: str = ""
) -> GuardRequest:
    grant = frozenset({exempt}) if exempt else frozenset()
    return GuardRequest("acme", {"department": dept, "feature": feature}, "gpt-4o", prompt, max_tokens, grant)


def test_normal_allows_and_reserves_worst_case() -> None:
    g = guard_with(breaker())
    d = g.decide(req(), NOW, 1.0, 0.5)
    assert (d.action, d.model, d.max_tokens) == ("allow", "gpt-4o", 200)
    assert g.local_nanos("b1") == (2 * (500 * 100 + 2_000 * 200), 0)  # 900,000 nano-USD reserved
    assert d.ticket is not None
    g.complete(d.ticket, 123_456, NOW, 2.0)
    assert g.local_nanos("b1") == (0, 123_456)


def test_out_of_scope_request_is_not_touched() -> None:
    g = guard_with(breaker("broken", LIMIT))
    assert g.decide(req(dept="legal"), NOW, 1.0, 0.5).action == "allow"
    assert g.local_nanos("b1") == (0, 0)


def test_warning_downgrades_model_and_caps_tokens() -> None:
    g = guard_with(breaker("warning", 600_000_000))
    d = g.decide(req(max_tokens=500), NOW, 1.0, 0.99)
    assert (d.action, d.model, d.max_tokens) == ("downgrade", "gpt-4o-mini", 100)
    assert g.local_nanos("b1")[0] == 500 * 100 + 2_000 * 100  # reserved at the downgraded model and cap


def test_throttle_rule_is_a_straight_line_to_the_limit() -> None:
    spent = 900_000_000  # halfway between the throttle level (800M) and the limit: p = 0.5
    g = guard_with(breaker("throttled", spent))
    admitted = g.decide(req(), NOW, 1.0, 0.49)
    assert admitted.action == "downgrade" and admitted.model == "gpt-4o-mini"
    g.release(admitted.ticket or 0)
    rejected = g.decide(req(), NOW, 1.0, 0.5)
    assert (rejected.action, rejected.retry_after_s) == ("throttle", 5)
    assert "admitting 50%" in rejected.reason


def test_broken_denies_until_the_period_ends() -> None:
    g = guard_with(breaker("broken", LIMIT))
    d = g.decide(req(), NOW, 1.0, 0.0)
    assert d.action == "deny" and d.budget_id == "b1"
    assert d.retry_after_s == int((END - NOW).total_seconds()) + 1  # 1,769,401 s to 1 December
    assert "exhausted" in d.reason
    # After the period end the stale broken state no longer applies (new period, zero spend).
    assert g.decide(req(), END + timedelta(seconds=1), 1.0, 0.0).action == "allow"


def test_whitelisted_feature_passes_a_broken_budget_only_for_a_key_granted_it() -> None:
    g = guard_with(breaker("broken", LIMIT))
    assert g.decide(req(feature="incident", exempt="incident"), NOW, 1.0, 0.0).action == "allow"
    assert g.decide(req(feature="incident"), NOW, 1.0, 0.0).action == "deny"  # the claim alone exempts nothing


def test_reservations_bound_the_overshoot_between_breaker_updates() -> None:
    """No breaker update arrives: in-flight worst cases alone stop admissions at the limit."""
    g = guard_with(breaker("normal", 0))
    while g.decide(req(), NOW, 1.0, 0.0).admitted:
        pass
    # Full-size reservations (900,000 nano-USD) until local spend reaches the warning level,
    # then downgraded ones (250,000): admissions stop when the next worst case would not fit.
    reserved, _ = g.local_nanos("b1")
    assert reserved == 999_850_000
    assert LIMIT - reserved < 250_000
    without = guard_with(breaker("normal", 0), reservations=False)
    assert all(without.decide(req(), NOW, 1.0, 0.0).admitted for _ in range(5_000))


def test_completion_counted_until_a_newer_breaker_includes_it() -> None:
    g = guard_with(breaker("normal", 0), hold_s=5.0)
    d = g.decide(req(), NOW, 1.0, 0.0)
    g.complete(d.ticket or 0, 400_000_000, NOW, 10.0)
    g.apply(breaker("normal", 0, updated_at=(NOW - timedelta(seconds=1)).isoformat()), "b1", 20.0)
    assert g.local_nanos("b1") == (0, 400_000_000)  # breaker older than the event: keep
    g.apply(breaker("normal", 400_000_000), "b1", 12.0)
    assert g.local_nanos("b1") == (0, 400_000_000)  # newer, but within hold: keep (count twice, briefly)
    g.apply(breaker("normal", 400_000_000), "b1", 16.0)
    assert g.local_nanos("b1") == (0, 0)


def test_headroom_share_splits_remaining_between_gateways() -> None:
    g = guard_with(breaker("normal", 0), headroom_share=Decimal("0.25"))
    worst = 900_000
    admitted = 0
    while g.decide(req(), NOW, 1.0, 0.0).admitted:
        admitted += 1
    assert admitted == (LIMIT // 4) // worst == 277


@pytest.mark.parametrize(("fail_open", "action"), [(True, "allow"), (False, "deny")])
def test_stale_feed_fails_open_or_closed_per_budget(fail_open: bool, action: str) -> None:
    g = guard_with(breaker("normal", 0, fail_open=fail_open), stale_after_s=10.0)
    assert g.decide(req(), NOW, 5.0, 0.0).action == "allow"
    d = g.decide(req(), NOW, 11.0, 0.0)  # last contact at 0.0
    assert d.action == action
    if action == "deny":
        assert d.retry_after_s == 5 and "unavailable" in d.reason
    g.touch(11.0)
    assert g.decide(req(), NOW, 12.0, 0.0).action == "allow"


def test_most_restrictive_budget_wins() -> None:
    g = guard_with(
        breaker("warning", 600_000_000, budget_id="dept"),
        breaker("broken", LIMIT, budget_id="feature", scope={"feature": "chat"}),
    )
    d = g.decide(req(), NOW, 1.0, 0.0)
    assert (d.action, d.budget_id) == ("deny", "feature")


def test_a_budget_without_a_downgrade_model_keeps_another_budgets_downgrade() -> None:
    """Two budgets at warning, one naming a cheaper model: the request is downgraded whatever their order.

    (Found by the demo: a budget without a downgrade model evaluated after one with it reset the
    request to its own model, so the outcome depended on the order breakers had arrived in.)
    """
    for order in ((True, False), (False, True)):
        g = guard_with()
        for with_model in order:
            doc = breaker("warning", LIMIT // 2 + 1)
            doc["budget_id"] = "with-model" if with_model else "without-model"
            doc["downgrade_model"] = "gpt-4o-mini" if with_model else None
            g.apply(doc, doc["budget_id"], 1.0)
        d = g.decide(req(), NOW, 1.0, 0.5)
        assert (d.action, d.model) == ("downgrade", "gpt-4o-mini")
