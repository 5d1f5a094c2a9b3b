"""What every billing job needs besides the store: configuration, prices, FX and a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from billing.config import BillingConfig
from tokenledger.pricing import CachedPriceTable, FxTable, LayeredPriceTable, PriceTable


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BillingContext:
    """Injected dependencies of the billing jobs (the clock included, for reproducible runs)."""

    config: BillingConfig
    table: PriceTable
    fx: FxTable
    clock: Callable[[], datetime] = field(default=_utc_now)

    @classmethod
    def default(cls, clock: Callable[[], datetime] = _utc_now) -> BillingContext:
        """Shipped configuration, price overrides and FX table."""
        return cls(BillingConfig.load(), CachedPriceTable(LayeredPriceTable.from_path()), FxTable.from_path(), clock)
