"""The price table the pipeline uses: overrides, then genai-prices, then the fallback rule."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

from tokenledger.minute_cache import MinuteCache
from tokenledger.pricing.catalog import GenaiPricesCatalog
from tokenledger.pricing.model import PriceSpec, PriceTable
from tokenledger.pricing.overrides import OverrideBook

DEFAULT_OVERRIDES = Path(__file__).resolve().parent.parent / "data" / "price_overrides.yaml"


class LayeredPriceTable:
    """Resolve a price: a local override in force wins; else genai-prices; else the fallback.

    An unknown model is never free: it is priced at the configured fallback rates (a
    conservative flagship price) and flagged ``unknown_model`` so reports can surface it.
    """

    def __init__(self, overrides: OverrideBook, catalog: GenaiPricesCatalog | None = None) -> None:
        self._overrides = overrides
        self._catalog = catalog if catalog is not None else GenaiPricesCatalog(overrides.batch_discounts)

    @classmethod
    def from_path(cls, path: Path = DEFAULT_OVERRIDES) -> LayeredPriceTable:
        """Build from an override file (default: the one shipped in the package)."""
        return cls(OverrideBook.from_file(path))

    def lookup(self, provider: str, model: str, at: datetime, *, batch: bool = False) -> PriceSpec:
        """Price spec in force for ``provider``/``model`` at ``at``.

        A batch request takes the provider's own batch prices where genai-prices has them
        (flag ``provider_batch_price``); otherwise, and for overrides and unknown models, the
        flat ``batch_discounts`` of the override file apply to every component.
        """
        spec = self._overrides.find(provider, model, at)
        if spec is None:
            spec = self._catalog.find(provider, model, at, batch=batch)
        if spec is None:
            spec = PriceSpec(
                provider=provider,
                model=model,
                rates=self._overrides.fallback,
                source="fallback",
                origin=self._overrides.version,
                batch_discount=self._overrides.batch_discounts.get(provider, Decimal(0)),
                flags=frozenset({"unknown_model"}),
            )
        return spec


class CachedPriceTable:
    """Memoises lookups per ``(provider, model, batch)`` and minute for the hot path (at most ``maxsize``).

    Price changes (effective dates, off-peak windows) start on whole minutes, so a minute
    bucket never mixes two prices.
    """

    def __init__(self, inner: PriceTable, maxsize: int = 65_536) -> None:
        self._inner = inner
        self._cache: MinuteCache[tuple[str, str, bool], PriceSpec] = MinuteCache(maxsize)

    def lookup(self, provider: str, model: str, at: datetime, *, batch: bool = False) -> PriceSpec:
        """Same answer as the inner table, cached."""
        return self.lookup_minute(provider, model, int(at.timestamp()) // 60, at, batch=batch)

    def lookup_minute(self, provider: str, model: str, minute: int, at: datetime, *, batch: bool = False) -> PriceSpec:
        """:meth:`lookup` for a caller that has ``at``'s epoch minute already (the pricing stage)."""
        by_minute = self._cache.get((provider, model, batch))
        spec = by_minute.get(minute) if by_minute is not None else None
        if spec is None:
            spec = self._cache.remember(
                (provider, model, batch), minute, self._inner.lookup(provider, model, at, batch=batch)
            )
        return spec
