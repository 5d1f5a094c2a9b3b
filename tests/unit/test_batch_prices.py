"""Batch API calls: the provider's own batch prices where genai-prices has them, the flat discount otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from billing.advice import batch_saving_share
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, UsageRecord, price

AT = datetime(2026, 11, 1, 12, tzinfo=UTC)
TABLE = LayeredPriceTable.from_path()


def usage(provider: str, model: str, *, batch: bool) -> UsageRecord:
    return UsageRecord(provider, model, input_tokens=10_000, output_tokens=1_000, cached_read_tokens=2_000, batch=batch)


def test_provider_batch_prices_differ_per_component() -> None:
    # gemini-2.5-flash batch: input 0.15, output 1.25 USD/MTok, cached input stays at 0.03.
    cost = price(usage("google", "gemini-2.5-flash", batch=True), AT, TABLE)
    assert (cost.input_nanos, cost.cached_read_nanos, cost.output_nanos) == (1_200_000, 60_000, 1_250_000)
    assert cost.total_nanos == 2_510_000
    assert "provider_batch_price" in cost.flags and "batch_discount" not in cost.flags
    standard = price(usage("google", "gemini-2.5-flash", batch=False), AT, TABLE)
    assert standard.total_nanos == 4_960_000  # a flat 50 % would have billed 2,480,000
    assert standard.price_version != cost.price_version


def test_gpt_4o_batch_keeps_cached_input_at_the_standard_rate() -> None:
    # The example: input and output halved, cached input 1.25 USD/MTok as without batch.
    cost = price(usage("openai", "gpt-4o", batch=True), AT, TABLE)
    assert (cost.input_nanos, cost.cached_read_nanos, cost.output_nanos) == (10_000_000, 2_500_000, 5_000_000)
    assert "provider_batch_price" in cost.flags
    assert price(usage("openai", "gpt-4o", batch=False), AT, TABLE).total_nanos == 32_500_000  # flat: 16,250,000


def test_flat_discount_when_the_catalog_has_no_batch_price() -> None:
    # claude-sonnet-4-0 has no batch variant in the bundled genai-prices: 50 % off every component.
    cost = price(usage("anthropic", "claude-sonnet-4-0", batch=True), AT, TABLE)
    assert (cost.input_nanos, cost.cached_read_nanos, cost.output_nanos) == (12_000_000, 300_000, 7_500_000)
    assert "batch_discount" in cost.flags and "provider_batch_price" not in cost.flags
    # An unknown model is priced at the fallback rates, also halved.
    unknown = price(usage("openai", "gpt-unknown-9", batch=True), AT, TABLE)
    assert unknown.total_nanos == (8_000 * 15_000 + 2_000 * 15_000 + 1_000 * 75_000) // 2
    assert {"unknown_model", "batch_discount"} <= unknown.flags


def test_cache_keeps_batch_and_standard_apart() -> None:
    cached = CachedPriceTable(TABLE)
    for batch in (True, False, True):
        assert cached.lookup("google", "gemini-2.5-flash", AT, batch=batch) == TABLE.lookup(
            "google", "gemini-2.5-flash", AT, batch=batch
        )


def test_advice_uses_the_provider_batch_saving() -> None:
    assert batch_saving_share(TABLE, "anthropic", "claude-sonnet-4-0", AT) == Decimal("0.5")
    assert batch_saving_share(TABLE, "openai", "gpt-4o", AT) == Decimal(32_500_000 - 17_500_000) / 32_500_000


OCTOBER = datetime(2026, 10, 1, 12, tzinfo=UTC)  # before genai-prices 0.2.3 listed any batch price (10-14)


def test_batch_prices_hold_across_the_catalog_listing_date() -> None:
    # One rule per model in October: the listed batch/standard ratio of each component, back-dated.
    for provider, model in (("openai", "gpt-4o"), ("azure", "gpt-4o"), ("google", "gemini-2.5-pro")):
        before = price(usage(provider, model, batch=True), OCTOBER, TABLE)
        after = price(usage(provider, model, batch=True), AT, TABLE)
        assert before.total_nanos == after.total_nanos, (provider, model)
        assert {"provider_batch_price", "batch_backdated"} <= before.flags and "batch_discount" not in before.flags
    gpt = price(usage("openai", "gpt-4o", batch=True), OCTOBER, TABLE)
    assert (gpt.input_nanos, gpt.cached_read_nanos, gpt.output_nanos) == (10_000_000, 2_500_000, 5_000_000)


def test_azure_batch_is_azure_s_own_listing() -> None:
    # Azure's Global Batch: 50 % off input and output, as its own catalog entry says (17,500,000 nano-USD).
    cost = price(usage("azure", "gpt-4o", batch=True), AT, TABLE)
    assert cost.total_nanos == 17_500_000 and "provider_batch_price" in cost.flags


def test_batch_rule_per_provider_without_catalog_batch_prices() -> None:
    qwen = price(usage("dashscope", "qwen-max", batch=True), AT, TABLE)
    assert qwen.total_nanos * 2 == price(usage("dashscope", "qwen-max", batch=False), AT, TABLE).total_nanos
    assert "batch_discount" in qwen.flags
    deepseek = price(usage("deepseek", "deepseek-chat", batch=True), AT, TABLE)
    assert deepseek.total_nanos == price(usage("deepseek", "deepseek-chat", batch=False), AT, TABLE).total_nanos
