"""Memoised price resolution answers exactly as a fresh lookup does, for every model and instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, UsageRecord, price
from tokenledger.pricing.catalog import GenaiPricesCatalog
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
