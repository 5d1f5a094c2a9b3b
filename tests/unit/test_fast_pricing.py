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


EDGE_MODELS = [
    ("deepseek", "deepseek-chat"),  # overrides from 2025-09-05 16:00 and 09-29; off-peak 00:30-16:30 UTC before
    ("deepseek", "deepseek-flash"),  # two off-peak windows a day
    ("deepseek", "deepseek-v4-flash"),  # start dates and off-peak windows
    ("deepseek", "deepseek-v4-pro"),
    ("google", "gemini-2.5-flash"),  # batch prices listed from a start date
    ("azure", "gpt-4o"),
    ("openai", "gpt-unknown-9"),
]
EDGES = [
    datetime(2025, 9, 5, 16, tzinfo=UTC),
    datetime(2025, 9, 29, tzinfo=UTC),
    datetime(2026, 8, 17, tzinfo=UTC),
    datetime(2026, 9, 10, tzinfo=UTC),
    datetime(2026, 10, 14, tzinfo=UTC),
    datetime(2026, 9, 1, 0, 30, tzinfo=UTC),
    datetime(2026, 9, 1, 16, 30, tzinfo=UTC),
    datetime(2026, 9, 2, 1, tzinfo=UTC),
    datetime(2026, 9, 2, 4, tzinfo=UTC),
    datetime(2026, 9, 2, 6, tzinfo=UTC),
    datetime(2026, 9, 2, 10, tzinfo=UTC),
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(EDGE_MODELS),
            st.sampled_from(EDGES),
            st.integers(-2 * 86_400_000_000, 2 * 86_400_000_000) | st.integers(-3, 3),  # µs from an edge
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_spans_cache_answers_as_a_fresh_lookup_next_to_every_price_edge(
    calls: list[tuple[tuple[str, str], datetime, int, bool]],
) -> None:
    # One cache for the whole sequence, in the order drawn (events out of order, models
    # interleaved): each answer is the one a fresh table gives at that instant.
    cached = CachedPriceTable(LayeredPriceTable(BOOK, GenaiPricesCatalog({"openai": Decimal("0.5")})))
    fresh = LayeredPriceTable(BOOK, GenaiPricesCatalog({"openai": Decimal("0.5")}))
    for model, edge, delta_us, batch in calls:
        at = edge + timedelta(microseconds=delta_us)
        assert cached.lookup(*model, at, batch=batch) == fresh.lookup(*model, at, batch=batch), (model, at, batch)


def test_a_span_ends_where_the_price_changes() -> None:
    table = LayeredPriceTable(BOOK, GenaiPricesCatalog())
    at = datetime(2024, 9, 2, 12, tzinfo=UTC)  # deepseek-chat before any override: the off-peak window
    lo, hi = table.span_us("deepseek", "deepseek-chat", at)
    start, end = (EPOCH_UTC + timedelta(microseconds=lo), EPOCH_UTC + timedelta(microseconds=hi))
    assert (start, end) == (datetime(2024, 9, 2, 0, 30, tzinfo=UTC), datetime(2024, 9, 2, 16, 30, tzinfo=UTC))
    assert table.lookup("deepseek", "deepseek-chat", end) != table.lookup("deepseek", "deepseek-chat", at)
    # An override in force: bounded by its own start and the next one only.
    lo, hi = table.span_us("deepseek", "deepseek-chat", datetime(2025, 9, 10, tzinfo=UTC))
    assert (EPOCH_UTC + timedelta(microseconds=lo), EPOCH_UTC + timedelta(microseconds=hi)) == (EDGES[0], EDGES[1])


EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
