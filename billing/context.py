"""What every billing job needs besides the store: configuration, prices, FX and a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from billing.config import BillingConfig
from tokenledger.control.state import ControlState
from tokenledger.pricing import CachedPriceTable, FxTable, LayeredPriceTable, PriceTable
from tokenledger.pricing.fx_import import entries_of


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

    def with_fx(self, fx: FxTable) -> BillingContext:
        """This context converting with ``fx``."""
        return replace(self, fx=fx)

    def for_tenant(self, timezone: str, currency: str) -> BillingContext:
        """This context with a tenant's calendar and billing currency (from its control-plane record)."""
        if (timezone, currency) == (self.config.timezone, self.config.currency):
            return self
        return replace(self, config=self.config.model_copy(update={"timezone": timezone, "currency": currency}))


_FX: dict[int, tuple[int, BillingContext]] = {}


def live_fx(ctx: BillingContext, control: ControlState) -> BillingContext:
    """``ctx`` with the control plane's imported daily rates layered over its FX file (rebuilt when they change)."""
    if not control.fx:
        return ctx
    found = _FX.get(id(ctx))
    if found is None or found[0] != control.fx_version:
        entries = entries_of(list(control.fx.values()))
        fx = ctx.fx.with_entries(entries, f"{ctx.fx.version}+control@{control.fx_version}")
        found = _FX[id(ctx)] = (control.fx_version, ctx.with_fx(fx))
    return found[1]
