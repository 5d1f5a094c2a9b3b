"""The per-group minute caches keep one bound over all groups, whatever names arrive."""

from __future__ import annotations

from datetime import UTC, datetime

from tokenledger.minute_cache import MinuteCache
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable


def test_one_bound_over_every_group() -> None:
    cache: MinuteCache[str, int] = MinuteCache(limit=5)
    for i in range(23):
        assert cache.remember(f"model-{i}", i, i * 10) == i * 10
        assert cache.size == sum(len(m) for m in cache.values()) <= 5
    assert cache.get("model-22", {}).get(22) == 220
    assert cache.get("model-0") is None  # dropped when the cache was full
    cache.clear()
    assert cache.size == 0 and not cache


def test_a_flood_of_made_up_models_stays_within_the_price_cache_bound() -> None:
    table = CachedPriceTable(LayeredPriceTable.from_path(), maxsize=100)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    specs = {table.lookup("openai", f"made-up-{i}", at).model for i in range(1_000)}
    assert len(specs) == 1_000
    assert len(table._spans) <= 100  # the bound is the point
    assert table.lookup("openai", "gpt-4o", at) is table.lookup("openai", "gpt-4o", at)
