"""Adapter over the ``genai-prices`` snapshot bundled in its wheel (no network).

genai-prices resolves effective-dated and time-of-day prices itself; we always pass the
event timestamp and translate its ``ModelPrice`` into our :class:`PriceSpec`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from genai_prices import __version__ as GENAI_PRICES_VERSION
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, Provider, StartDateConstraint, TieredPrices, TimeOfDateConstraint

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
        self._specs: dict[tuple[Any, ...], PriceSpec | None] = {}

    def find(self, provider: str, model: str, at: datetime, *, batch: bool = False) -> PriceSpec | None:
        """Price spec for the model at ``at``, or ``None`` when genai-prices does not know it.

        With ``batch``, the model's own batch-processing prices when genai-prices lists them
        (they may differ per component: e.g. cached input kept at the standard rate), flagged
        ``provider_batch_price``; else the standard prices with the provider's flat discount.

        Tries the stated provider first; when the provider is unknown to genai-prices (e.g.
        ``azure`` deployments of OpenAI models) it lets genai-prices infer the provider and
        flags ``provider_inferred``.
        """
        resolved = self._model(provider, model)
        if resolved is False:
            return None
        prov, info, inferred = resolved
        standard = info.get_prices(at)
        # A reseller's batch API (an inferred provider: azure's deployments of OpenAI models) has
        # its own rule, the stated provider's flat discount, not the model owner's batch prices.
        batch_variants = [
            (i, v)
            for i, v in enumerate(info.price_variants or ())
            if batch and not inferred and v.when.get("processing") == "batch"
        ]
        variants = tuple(i for i, v in batch_variants if v.constraint is None or v.constraint.active(at))
        since = None
        if batch_variants and not variants:
            since = min(
                (v.constraint.start_date for _, v in batch_variants if isinstance(v.constraint, StartDateConstraint)),
                default=None,
            )
        # The same standard price object and the same active batch variants give the same spec:
        # built once, not per event (building one costs ~20 µs, matching the model more).
        key = (prov.id, info.id, inferred, id(standard), variants, since, provider if inferred else "")
        spec = self._specs.get(key)
        if spec is None:
            if since is not None:
                spec = self._backdated(prov, info, standard, since)
            else:
                spec = self._spec(
                    prov, info, info.get_prices(at, BATCH_CONTEXT) if variants else standard, inferred, variants
                )
                if spec is not None and inferred and batch:
                    spec = replace(spec, batch_discount=self._batch.get(provider, Decimal(0)))
            if len(self._specs) >= 65_536:
                self._specs.clear()
            self._specs[key] = spec
        return spec

    def _backdated(self, prov: Provider, info: ModelInfo, standard: Any, since: date) -> PriceSpec | None:
        """Batch prices before the catalog listed them: the listed batch/standard ratio of each component.

        genai-prices dates a model's batch prices from the day its catalog began listing them
        (2026-10-14 for every batch price of 0.2.3), not from the day the provider introduced
        them (OpenAI's Batch API 2024-04, Anthropic's Message Batches 2024-10, Gemini batch mode
        2025-07, each at the discount listed now). So a batch call before that date is priced
        with each component's listed ratio (e.g. gpt-4o: input and output 0.5, cached input
        1.0) applied to the standard prices in force then: one rule for the model across the
        listing date, following any standard price change before it.
        """
        first = datetime.combine(since, datetime.min.time(), UTC)
        listed = self._spec(prov, info, info.get_prices(first, BATCH_CONTEXT), False, (0,))
        base = self._spec(prov, info, info.get_prices(first), False, ())
        now = self._spec(prov, info, standard, False, ())
        if listed is None or base is None or now is None:
            return now
        ratio = {
            f: (getattr(listed.rates, f) / getattr(base.rates, f)) if getattr(base.rates, f) else Decimal(1)
            for f in ("input", "output", "cached_read", "cache_write", "reasoning")
        }

        def scaled(rates: Rates) -> Rates:
            def part(f: str) -> Decimal | None:
                v: Decimal | None = getattr(rates, f)
                return v * ratio[f] if v is not None else None

            return Rates(
                input=rates.input * ratio["input"],
                output=rates.output * ratio["output"],
                cached_read=part("cached_read"),
                cache_write=part("cache_write"),
                reasoning=part("reasoning"),
            )

        return replace(
            now,
            rates=scaled(now.rates),
            tiers=tuple(Tier(t.above_input_tokens, scaled(t.rates)) for t in now.tiers),
            origin=f"{now.origin}+batch-ratio-{since.isoformat()}",
            batch_discount=Decimal(0),  # the ratios are the batch prices: no flat discount on top
            flags=now.flags | {"provider_batch_price", "batch_backdated"},
        )

    def boundaries(self, provider: str, model: str, at: datetime) -> list[datetime] | None:
        """Instants around ``at`` where :meth:`find` may change its answer for the model, or ``None``.

        Between two consecutive ones (and within the model's standard and batch prices) every
        constraint genai-prices states keeps its value: a start date changes at its UTC
        midnight, a time-of-day window at its start and end on each UTC day (those of the day
        before, of and after ``at``'s bracket it). ``None``: a constraint of another kind, which
        cannot be bounded here.
        """
        resolved = self._model(provider, model)
        if resolved is False:
            return []
        info = resolved[1]
        conditional = info.prices if isinstance(info.prices, list) else []
        constraints = [c.constraint for c in conditional] + [v.constraint for v in info.price_variants or ()]
        day = at.astimezone(UTC).date()
        out: list[datetime] = []
        for c in constraints:
            if c is None:
                continue
            if isinstance(c, StartDateConstraint):
                out.append(datetime.combine(c.start_date, time(0), UTC))
            elif isinstance(c, TimeOfDateConstraint):
                for d in (day - timedelta(days=1), day, day + timedelta(days=1)):
                    out += [datetime.combine(d, _utc_time(t), UTC) for t in (c.start_time, c.end_time)]
            else:
                return None
        return out

    def _model(self, provider: str, model: str) -> tuple[Provider, ModelInfo, bool] | Literal[False]:
        """:meth:`_resolve`, memoised per name."""
        resolved = self._models.get((provider, model))
        if resolved is None:
            resolved = self._models[(provider, model)] = self._resolve(provider, model)
        return resolved

    def _resolve(self, provider: str, model: str) -> tuple[Provider, ModelInfo, bool] | Literal[False]:
        """genai-prices' provider and model for a name (False: unknown); see :meth:`_model`."""
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


def _utc_time(value: time) -> time:
    """A time of day as the UTC wall time genai-prices compares (naive: UTC), without its zone."""
    if value.tzinfo is None:
        return value
    return datetime.combine(date(1970, 1, 1), value).astimezone(UTC).time()
