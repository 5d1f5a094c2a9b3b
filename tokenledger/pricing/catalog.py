"""Adapter over the ``genai-prices`` snapshot bundled in its wheel (no network).

genai-prices resolves effective-dated and time-of-day prices itself; we always pass the
event timestamp and translate its ``ModelPrice`` into our :class:`PriceSpec`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from genai_prices import __version__ as GENAI_PRICES_VERSION
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, Provider, TieredPrices

from tokenledger.pricing.model import PriceSpec, Rates, Tier

BATCH_CONTEXT = {"processing": "batch"}  # genai-prices' price variant of batch API calls

# Our token classes and the genai-prices price keys that carry them.
_KEYS = {
    "input": "input_mtok",
    "cached_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "output": "output_mtok",
    "reasoning": "output_reasoning_mtok",
}


class GenaiPricesCatalog:
    """Looks up list prices in the genai-prices data snapshot."""

    def __init__(self, batch_discounts: dict[str, Decimal] | None = None) -> None:
        self._snapshot = data_snapshot.get_snapshot()
        self._batch = batch_discounts or {}
        self._models: dict[tuple[str, str], tuple[Provider, ModelInfo, bool] | Literal[False]] = {}
        self._specs: dict[tuple[str, str, bool, int, tuple[int, ...]], PriceSpec | None] = {}

    def find(self, provider: str, model: str, at: datetime, *, batch: bool = False) -> PriceSpec | None:
        """Price spec for the model at ``at``, or ``None`` when genai-prices does not know it.

        With ``batch``, the model's own batch-processing prices when genai-prices lists them
        (they may differ per component: e.g. cached input kept at the standard rate), flagged
        ``provider_batch_price``; else the standard prices with the provider's flat discount.

        Tries the stated provider first; when the provider is unknown to genai-prices (e.g.
        ``azure`` deployments of OpenAI models) it lets genai-prices infer the provider and
        flags ``provider_inferred``.
        """
        resolved = self._models.get((provider, model))
        if resolved is None:
            resolved = self._models[(provider, model)] = self._resolve(provider, model)
        if resolved is False:
            return None
        prov, info, inferred = resolved
        standard = info.get_prices(at)
        variants = tuple(
            i
            for i, v in enumerate(info.price_variants or ())
            if batch and v.when.get("processing") == "batch" and (v.constraint is None or v.constraint.active(at))
        )
        # The same standard price object and the same active batch variants give the same spec:
        # built once, not per event (building one costs ~20 µs, matching the model more).
        key = (prov.id, info.id, inferred, id(standard), variants)
        spec = self._specs.get(key)
        if spec is None:
            spec = self._spec(
                prov, info, info.get_prices(at, BATCH_CONTEXT) if variants else standard, inferred, variants
            )
            if len(self._specs) >= 65_536:
                self._specs.clear()
            self._specs[key] = spec
        return spec

    def _resolve(self, provider: str, model: str) -> tuple[Provider, ModelInfo, bool] | Literal[False]:
        """genai-prices' provider and model for a name (memoised by the caller; False: unknown)."""
        try:
            prov, info = self._snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            try:
                prov, info = self._snapshot.find_provider_model(model, None, None, None)
            except LookupError:
                return False
            return prov, info, True
        return prov, info, False

    def _spec(
        self, prov: Provider, info: ModelInfo, prices: Any, inferred: bool, variants: tuple[int, ...]
    ) -> PriceSpec | None:
        flags: set[str] = set()
        if inferred:
            flags.add("provider_inferred")
        own_batch = bool(variants)
        if own_batch:
            flags.add("provider_batch_price")
        raw = {ours: getattr(prices, key, None) for ours, key in _KEYS.items()}
        if raw["input"] is None or raw["output"] is None:
            return None  # not a token-priced model (audio, images): outside this ledger
        thresholds = sorted({t.start for v in raw.values() if isinstance(v, TieredPrices) for t in v.tiers})
        return PriceSpec(
            provider=prov.id,
            model=info.id,
            rates=_rates_at(raw, -1),
            tiers=tuple(Tier(above_input_tokens=t, rates=_rates_at(raw, t)) for t in thresholds),
            source="genai-prices",
            origin=f"v{GENAI_PRICES_VERSION}",
            batch_discount=Decimal(0) if own_batch else self._batch.get(prov.id, Decimal(0)),
            flags=frozenset(flags),
        )


def _rates_at(raw: dict[str, Any], threshold: int) -> Rates:
    """Rates in force for requests whose input exceeds ``threshold`` (-1: base tier)."""

    def value(key: str) -> Decimal | None:
        v = raw[key]
        if isinstance(v, TieredPrices):
            chosen: Decimal = v.base
            for tier in v.tiers:
                if tier.start <= threshold:
                    chosen = tier.price
            return chosen
        return v if isinstance(v, Decimal) else None

    inp, out = value("input"), value("output")
    assert inp is not None and out is not None
    return Rates(
        input=inp,
        output=out,
        cached_read=value("cached_read"),
        cache_write=value("cache_write"),
        reasoning=value("reasoning"),
    )
