"""Local, effective-dated price overrides (YAML). Where an override is in force it wins.

Write prices as quoted strings (``"0.28"``): a YAML float would pass through binary floating
point, so floats are refused.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from tokenledger.pricing.model import PriceSpec, Rates, Tier


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("write money and rates as quoted strings, e.g. '0.28', never YAML floats")
    return value


Usd = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, le=1, allow_inf_nan=False)]
_FORBID = ConfigDict(extra="forbid", frozen=True)


class RatesEntry(BaseModel):
    """Per-1M-token USD prices in the file."""

    model_config = _FORBID

    input_per_mtok: Usd
    output_per_mtok: Usd
    cached_read_per_mtok: Usd | None = None
    cache_write_per_mtok: Usd | None = None
    reasoning_per_mtok: Usd | None = None

    def to_rates(self) -> Rates:
        """As a :class:`Rates`."""
        return Rates(
            input=self.input_per_mtok,
            output=self.output_per_mtok,
            cached_read=self.cached_read_per_mtok,
            cache_write=self.cache_write_per_mtok,
            reasoning=self.reasoning_per_mtok,
        )


class TierEntry(RatesEntry):
    """A cliff tier: whole-request rates above an input-token threshold."""

    above_input_tokens: Annotated[int, Field(gt=0)]


class OverrideEntry(RatesEntry):
    """One model's prices from ``valid_from`` until the next entry for the same model."""

    provider: str
    model: str
    aliases: tuple[str, ...] = ()
    valid_from: AwareDatetime
    tiers: tuple[TierEntry, ...] = ()
    batch_discount: Fraction | None = None
    note: str = ""


class OverrideFile(BaseModel):
    """The whole override file."""

    model_config = _FORBID

    version: str
    fallback: RatesEntry
    batch_discounts: dict[str, Fraction] = Field(default_factory=dict)
    models: tuple[OverrideEntry, ...] = ()


@dataclass(frozen=True)
class OverrideBook:
    """Override entries indexed by ``(provider, model)`` and sorted by ``valid_from``."""

    version: str
    fallback: Rates
    batch_discounts: dict[str, Decimal]
    _index: dict[tuple[str, str], tuple[list[datetime], list[PriceSpec]]]

    @classmethod
    def from_file(cls, path: Path) -> OverrideBook:
        """Load and validate an override YAML file."""
        return cls.from_model(OverrideFile.model_validate(yaml.safe_load(path.read_text())))

    @classmethod
    def from_model(cls, doc: OverrideFile) -> OverrideBook:
        """Index a validated override document."""
        grouped: dict[tuple[str, str], list[PriceSpec]] = {}
        for entry in doc.models:
            discount = entry.batch_discount
            if discount is None:
                discount = doc.batch_discounts.get(entry.provider, Decimal(0))
            spec = PriceSpec(
                provider=entry.provider,
                model=entry.model,
                rates=entry.to_rates(),
                tiers=tuple(
                    Tier(t.above_input_tokens, t.to_rates())
                    for t in sorted(entry.tiers, key=lambda t: t.above_input_tokens)
                ),
                source="override",
                origin=doc.version,
                valid_from=entry.valid_from,
                batch_discount=discount,
            )
            for name in (entry.model, *entry.aliases):
                grouped.setdefault((entry.provider, name.lower()), []).append(spec)
        index: dict[tuple[str, str], tuple[list[datetime], list[PriceSpec]]] = {}
        for key, specs in grouped.items():
            specs.sort(key=lambda s: s.valid_from.timestamp() if s.valid_from else 0.0)
            starts = [s.valid_from for s in specs if s.valid_from is not None]
            if len(set(starts)) != len(starts):
                raise ValueError(f"override {key}: two entries share a valid_from")
            index[key] = (starts, specs)
        return cls(doc.version, doc.fallback.to_rates(), dict(doc.batch_discounts), index)

    def find(self, provider: str, model: str, at: datetime) -> PriceSpec | None:
        """The override in force at ``at``, or ``None`` (before the first entry, or no entry)."""
        found = self._index.get((provider, model.lower()))
        if found is None:
            return None
        starts, specs = found
        i = bisect.bisect_right(starts, at) - 1
        return specs[i] if i >= 0 else None

    def starts(self, provider: str, model: str) -> list[datetime]:
        """The instants an override of the model starts (sorted; empty: none): where :meth:`find` changes."""
        found = self._index.get((provider, model.lower()))
        return found[0] if found is not None else []
