"""Pricing: pure integer nano-USD pricing over effective-dated price tables."""

from tokenledger.pricing.engine import price, price_with_spec
from tokenledger.pricing.fx import FxTable
from tokenledger.pricing.model import Cost, PriceSpec, PriceTable, Rates, Tier, UsageRecord
from tokenledger.pricing.overrides import OverrideBook
from tokenledger.pricing.table import CachedPriceTable, LayeredPriceTable

__all__ = [
    "CachedPriceTable",
    "Cost",
    "FxTable",
    "LayeredPriceTable",
    "OverrideBook",
    "PriceSpec",
    "PriceTable",
    "Rates",
    "Tier",
    "UsageRecord",
    "price",
    "price_with_spec",
]
