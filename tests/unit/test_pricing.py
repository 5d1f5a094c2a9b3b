"""Exact nano-USD prices. Hand check: USD/1M tokens x tokens x 1000 = nano-USD."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from tokenledger.money import format_money, nanos_to_units
from tokenledger.pricing import CachedPriceTable, FxTable, LayeredPriceTable, OverrideBook, UsageRecord, price
from tokenledger.pricing.overrides import OverrideFile

U = UsageRecord

AT = datetime(2025, 10, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def table() -> LayeredPriceTable:
    return LayeredPriceTable.from_path()


def test_gpt_4o(table: LayeredPriceTable) -> None:
    # 1000 in x $2.50/M + 500 out x $10/M = $0.0025 + $0.005
    cost = price(U("openai", "gpt-4o", 1000, 500), AT, table)
    assert (cost.input_nanos, cost.output_nanos, cost.total_nanos) == (2_500_000, 5_000_000, 7_500_000)
    assert nanos_to_units(cost.total_nanos) == Decimal("0.0075")
    assert cost.price_version.startswith("genai-prices:v0.2.3:openai/gpt-4o@")
    assert not cost.flags


def test_gpt_4o_mini_with_cached_input(table: LayeredPriceTable) -> None:
    # 600 uncached x $0.15/M + 400 cached x $0.075/M + 500 out x $0.60/M
    cost = price(U("openai", "gpt-4o-mini", 1000, 500, cached_read_tokens=400), AT, table)
    assert cost.input_nanos == 90_000
    assert cost.cached_read_nanos == 30_000
    assert cost.output_nanos == 300_000
    assert nanos_to_units(cost.total_nanos) == Decimal("0.00042")


def test_claude_sonnet_cache_read_and_write(table: LayeredPriceTable) -> None:
    # 2000 plain x $3 + 6000 read x $0.30 + 2000 write x $3.75 + 800 out x $15 (per M)
    cost = price(
        U(
            "anthropic",
            "claude-sonnet-4-20250514",
            10_000,
            800,
            cached_read_tokens=6000,
            cache_write_tokens=2000,
        ),
        AT,
        table,
    )
    assert (cost.input_nanos, cost.cached_read_nanos, cost.cache_write_nanos, cost.output_nanos) == (
        6_000_000,
        1_800_000,
        7_500_000,
        12_000_000,
    )
    assert nanos_to_units(cost.total_nanos) == Decimal("0.0273")


def test_gemini_25_pro_tier_cliff_at_200k(table: LayeredPriceTable) -> None:
    below = price(U("google", "gemini-2.5-pro", 200_000, 1000), AT, table)
    above = price(U("google", "gemini-2.5-pro", 200_001, 1000), AT, table)
    # <=200k: $1.25 in / $10 out; >200k: $2.50 in / $15 out on the whole request.
    assert nanos_to_units(below.total_nanos) == Decimal("0.26")
    assert above.input_nanos == 500_002_500
    assert above.output_nanos == 15_000_000
    assert nanos_to_units(above.total_nanos) == Decimal("0.5150025")
    assert below.price_version == above.price_version


def test_gemini_cached_read_follows_the_tier(table: LayeredPriceTable) -> None:
    cost = price(U("google", "gemini-2.5-pro", 300_000, 0, cached_read_tokens=100_000), AT, table)
    # 200k x $2.50 + 100k cached x $0.25 (tier price of cached input)
    assert (cost.input_nanos, cost.cached_read_nanos) == (500_000_000, 25_000_000)


def test_deepseek_chat_uses_local_override(table: LayeredPriceTable) -> None:
    # V3.2 list price: $0.28 miss / $0.028 hit / $0.42 out per M
    cost = price(U("deepseek", "deepseek-chat", 1000, 1000, cached_read_tokens=500), AT, table)
    assert (cost.input_nanos, cost.cached_read_nanos, cost.output_nanos) == (140_000, 14_000, 420_000)
    assert cost.price_version.startswith("override:2026-11-22:deepseek/deepseek-chat@2025-09-29T00:00Z#")


def test_deepseek_price_change_mid_month(table: LayeredPriceTable) -> None:
    usage = U("deepseek", "deepseek-chat", 1_000_000, 1_000_000)
    before = price(usage, datetime(2025, 9, 28, 23, 59, 59, tzinfo=UTC), table)
    after = price(usage, datetime(2025, 9, 29, 0, 0, tzinfo=UTC), table)
    assert nanos_to_units(before.total_nanos) == Decimal("2.24")  # 0.56 + 1.68
    assert nanos_to_units(after.total_nanos) == Decimal("0.70")  # 0.28 + 0.42
    assert before.price_version != after.price_version


def test_before_first_override_genai_prices_applies_with_off_peak(table: LayeredPriceTable) -> None:
    usage = U("deepseek", "deepseek-chat", 1_000_000, 1_000_000)
    peak = price(usage, datetime(2025, 6, 2, 3, 0, tzinfo=UTC), table)
    off_peak = price(usage, datetime(2025, 6, 2, 17, 0, tzinfo=UTC), table)
    assert nanos_to_units(peak.total_nanos) == Decimal("1.37")  # 0.27 + 1.10
    assert nanos_to_units(off_peak.total_nanos) == Decimal("0.685")  # half price 16:30-00:30 UTC
    assert peak.price_version.startswith("genai-prices:")
    assert peak.price_version != off_peak.price_version


def test_local_override_mid_month_for_an_openai_model() -> None:
    doc = OverrideFile.model_validate(
        {
            "version": "test-1",
            "fallback": {"input_per_mtok": "10", "output_per_mtok": "30"},
            "models": [
                {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "valid_from": "2026-03-15T00:00:00+08:00",
                    "input_per_mtok": "0.12",
                    "output_per_mtok": "0.48",
                }
            ],
        }
    )
    table = LayeredPriceTable(OverrideBook.from_model(doc))
    usage = U("openai", "gpt-4o-mini", 1_000_000, 1_000_000)
    old = price(usage, datetime(2026, 3, 14, 15, 59, tzinfo=UTC), table)
    new = price(usage, datetime(2026, 3, 14, 16, 0, tzinfo=UTC), table)  # = 03-15 00:00 +08:00
    assert nanos_to_units(old.total_nanos) == Decimal("0.75")
    assert nanos_to_units(new.total_nanos) == Decimal("0.60")
    assert new.price_version.startswith("override:test-1:openai/gpt-4o-mini@2026-03-14T16:00Z#")


def test_unknown_model_priced_by_fallback_and_flagged(table: LayeredPriceTable) -> None:
    cost = price(U("openai", "mystery-9000", 1000, 1000), AT, table)
    assert cost.total_nanos == 90_000_000  # $15/M in + $75/M out
    assert cost.flags == frozenset({"unknown_model"})
    assert cost.price_version.startswith("fallback:")


def test_batch_discount(table: LayeredPriceTable) -> None:
    cost = price(U("openai", "gpt-4o", 1000, 500, batch=True), AT, table)
    assert cost.total_nanos == 3_750_000
    # Before genai-prices listed gpt-4o's batch prices (2026-10-14): their ratios, back-dated.
    assert {"provider_batch_price", "batch_backdated"} <= cost.flags


def test_reasoning_tokens_are_part_of_output(table: LayeredPriceTable) -> None:
    # o3-mini: $1.10 in / $4.40 out; 700 of the 1000 output tokens are reasoning.
    cost = price(U("openai", "o3-mini", 1000, 1000, reasoning_tokens=700), AT, table)
    assert (cost.output_nanos, cost.reasoning_nanos) == (1_320_000, 3_080_000)
    assert cost.total_nanos == 1_100_000 + 4_400_000


def test_qwen_tiered_override(table: LayeredPriceTable) -> None:
    cost = price(U("dashscope", "qwen3-max", 40_000, 1000), AT, table)
    assert (cost.input_nanos, cost.output_nanos) == (96_000_000, 12_000_000)  # 32k-128k tier


def test_sub_nano_component_rounds_half_even(table: LayeredPriceTable) -> None:
    # 1 token x $0.0375/M... use gpt-4o-mini cached: 1 x $0.075/M = 75 nanos exactly; 1 token of
    # deepseek cache hit: 1 x $0.028/M = 28 nanos; qwen-turbo 1 token in: 50 nanos.
    cost = price(U("deepseek", "deepseek-chat", 1, 0, cached_read_tokens=1), AT, table)
    assert cost.cached_read_nanos == 28


def test_naive_timestamp_refused(table: LayeredPriceTable) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        price(U("openai", "gpt-4o", 1, 1), datetime(2025, 1, 1), table)


def test_cached_table_agrees(table: LayeredPriceTable) -> None:
    cached = CachedPriceTable(table)
    for at in (AT, datetime(2025, 6, 2, 17, 0, tzinfo=UTC)):
        assert cached.lookup("deepseek", "deepseek-chat", at) == table.lookup("deepseek", "deepseek-chat", at)


def test_yaml_floats_refused(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("version: x\nfallback: {input_per_mtok: 0.1, output_per_mtok: '1'}\n")
    with pytest.raises(ValidationError, match="quoted strings"):
        OverrideBook.from_file(bad)


def test_fx_conversion_is_effective_dated_and_exact() -> None:
    fx = FxTable.from_path()
    h1 = fx.convert(7_500_000, "USD", "CNY", datetime(2025, 3, 1, tzinfo=UTC))
    h2 = fx.convert(7_500_000, "USD", "CNY", datetime(2025, 8, 1, tzinfo=UTC))
    assert (h1.nanos, h1.rate) == (54_744_750, Decimal("7.2993"))
    assert (h2.nanos, h2.rate) == (53_742_000, Decimal("7.1656"))
    back = fx.convert(7_165_600_000, "CNY", "USD", datetime(2025, 8, 1, tzinfo=UTC))
    assert back.nanos == 1_000_000_000
    with pytest.raises(LookupError):
        fx.convert(1, "USD", "GBP", AT)
    assert format_money(h2.nanos, "CNY") == "0.05 CNY"
