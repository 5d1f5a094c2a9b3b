"""Currency conversion of integer nano amounts from an effective-dated FX table."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from tokenledger.money import to_nanos
from tokenledger.pricing.overrides import _no_float

DEFAULT_FX = Path(__file__).resolve().parent.parent / "data" / "fx_rates.yaml"

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class FxEntry(BaseModel):
    """``1 base = rate quote`` from ``valid_from``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Currency
    quote: Currency
    valid_from: AwareDatetime
    rate: Annotated[Decimal, BeforeValidator(_no_float), Field(gt=0, allow_inf_nan=False)]


class FxFile(BaseModel):
    """The FX YAML document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    rates: tuple[FxEntry, ...]


@dataclass(frozen=True)
class Conversion:
    """A converted amount and the rate used (for the audit trail)."""

    nanos: int
    currency: str
    rate: Decimal
    rate_valid_from: datetime | None


class FxTable:
    """Effective-dated FX rates; conversion is a pure function of amount, pair and instant."""

    def __init__(self, doc: FxFile) -> None:
        self.version = doc.version
        pairs: dict[tuple[str, str], list[FxEntry]] = {}
        for e in doc.rates:
            pairs.setdefault((e.base, e.quote), []).append(e)
        self._pairs = {k: sorted(v, key=lambda e: e.valid_from) for k, v in pairs.items()}

    def with_entries(self, entries: list[FxEntry], version: str) -> FxTable:
        """This table plus ``entries`` (imported daily rates win over a file's rate of the same instant)."""
        merged: dict[tuple[str, str, datetime], FxEntry] = {}
        for pair in self._pairs.values():
            for e in pair:
                merged[(e.base, e.quote, e.valid_from)] = e
        for e in entries:
            merged[(e.base, e.quote, e.valid_from)] = e
        return FxTable(FxFile(version=version, rates=tuple(merged.values())))

    @classmethod
    def from_path(cls, path: Path = DEFAULT_FX) -> FxTable:
        """Load an FX YAML file (default: the one shipped in the package)."""
        return cls(FxFile.model_validate(yaml.safe_load(path.read_text())))

    def rate(self, base: str, quote: str, at: datetime) -> tuple[Decimal, datetime | None]:
        """Rate ``base``->``quote`` in force at ``at`` and its start.

        Raises:
            LookupError: No rate for the pair at that time.
        """
        if base == quote:
            return Decimal(1), None
        direct = self._find(base, quote, at)
        if direct is not None:
            return direct.rate, direct.valid_from
        inverse = self._find(quote, base, at)
        if inverse is not None:
            return 1 / inverse.rate, inverse.valid_from
        raise LookupError(f"no FX rate {base}->{quote} at {at.isoformat()}")

    def convert(self, nanos: int, base: str, quote: str, at: datetime) -> Conversion:
        """Convert ``nanos`` of ``base`` into nanos of ``quote`` at the rate in force at ``at``.

        Rounded once, half-to-even, to the nano-unit.
        """
        rate, since = self.rate(base, quote, at)
        return Conversion(to_nanos(nanos * rate), quote, rate, since)

    def _find(self, base: str, quote: str, at: datetime) -> FxEntry | None:
        entries = self._pairs.get((base, quote))
        if not entries:
            return None
        i = bisect.bisect_right([e.valid_from for e in entries], at) - 1
        return entries[i] if i >= 0 else None
