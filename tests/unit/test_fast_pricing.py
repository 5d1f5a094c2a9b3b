"""Memoised price resolution answers exactly as a fresh lookup does, for every model and instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, UsageRecord, price
from tokenledger.pricing.catalog import GenaiPricesCatalog
from tokenledger.pricing.engine import price_with_spec
from tokenledger.pricing.model import PriceSpec, Rates, Tier
from tokenledger.pricing.overrides import OverrideBook
from tokenledger.pricing.table import DEFAULT_OVERRIDES

SHARED = GenaiPricesCatalog({"openai": Decimal("0.5")})
BOOK = OverrideBook.from_file(DEFAULT_OVERRIDES)
TABLE = CachedPriceTable(LayeredPriceTable(BOOK, SHARED))
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("azure", "gpt-4o"),  # provider inferred
    ("anthropic", "claude-sonnet-4-20250514"),
    ("google", "gemini-2.5-pro"),  # tiered
    ("google", "gemini-2.5-flash"),
    ("deepseek", "deepseek-chat"),  # overrides and off-peak windows
    ("deepseek", "deepseek-reasoner"),
    ("dashscope", "qwen-max"),
    ("openai", "gpt-unknown-9"),  # fallback
]
START = datetime(2024, 6, 1, tzinfo=UTC)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(MODELS),
    st.integers(0, 3 * 365 * 86_400),
    st.booleans(),
    st.integers(0, 400_000),
    st.integers(0, 5_000),
)
def test_cached_resolution_equals_a_fresh_one(
    model: tuple[str, str], offset_s: int, batch: bool, input_tokens: int, output_tokens: int
) -> None:
    at = START + timedelta(seconds=offset_s)
    fresh = LayeredPriceTable(BOOK, GenaiPricesCatalog({"openai": Decimal("0.5")}))
    spec = TABLE.lookup(*model, at, batch=batch)
    assert spec == fresh.lookup(*model, at, batch=batch)
    assert spec.version_id == fresh.lookup(*model, at, batch=batch).version_id
    usage = UsageRecord(*model, input_tokens=input_tokens, output_tokens=output_tokens, batch=batch)
    assert price(usage, at, TABLE) == price(usage, at, fresh)


def decimal_price(usage: UsageRecord, spec: PriceSpec) -> tuple[int, int, int, int, int]:
    """The pricing arithmetic as first written: Decimal products, each rounded half-to-even once."""
    rates = spec.rates_for(usage.input_tokens)
    factor = Decimal(1000) * (1 - spec.batch_discount) if usage.batch and spec.batch_discount else Decimal(1000)

    def component(tokens: int, rate: Decimal | None, default: Decimal) -> int:
        return int((tokens * (default if rate is None else rate) * factor).quantize(Decimal(1), ROUND_HALF_EVEN))

    return (
        component(usage.input_tokens - usage.cached_read_tokens - usage.cache_write_tokens, rates.input, rates.input),
        component(usage.cached_read_tokens, rates.cached_read, rates.input),
        component(usage.cache_write_tokens, rates.cache_write, rates.input),
        component(usage.output_tokens - usage.reasoning_tokens, rates.output, rates.output),
        component(usage.reasoning_tokens, rates.reasoning, rates.output),
    )


# USD per MTok with up to 6 decimals: products of 1,000 x rate x tokens land exactly on .5 often
_rates = st.decimals(min_value=0, max_value=200, places=6, allow_nan=False, allow_infinity=False)


@settings(max_examples=1_000, deadline=None)
@given(
    st.tuples(_rates, _rates, st.none() | _rates, st.none() | _rates, st.none() | _rates),
    st.sampled_from([Decimal(0), Decimal("0.5"), Decimal("0.25"), Decimal("0.333")]),
    st.integers(0, 2_000_000),
    st.integers(0, 1_000_000),
    st.integers(0, 1_000_000),
    st.integers(0, 1_000_000),
    st.booleans(),
)
def test_integer_pricing_equals_decimal_pricing(
    r: tuple[Decimal, Decimal, Decimal | None, Decimal | None, Decimal | None],
    discount: Decimal,
    input_tokens: int,
    cached: int,
    output_tokens: int,
    reasoning: int,
    batch: bool,
) -> None:
    spec = PriceSpec(
        "p",
        "m",
        Rates(r[0], r[1], r[2], r[3], r[4]),
        "override",
        batch_discount=discount,
        tiers=(Tier(1_000_000, Rates(r[0] * 2, r[1] * 2)),),
    )
    usage = UsageRecord(
        "p",
        "m",
        input_tokens=input_tokens + cached,
        output_tokens=output_tokens + reasoning,
        cached_read_tokens=cached,
        reasoning_tokens=reasoning,
        batch=batch,
    )
    cost = price_with_spec(usage, spec)
    got = (cost.input_nanos, cost.cached_read_nanos, cost.cache_write_nanos, cost.output_nanos, cost.reasoning_nanos)
    assert got == decimal_price(usage, spec)
    assert ("batch_discount" in cost.flags) == (batch and discount > 0)
