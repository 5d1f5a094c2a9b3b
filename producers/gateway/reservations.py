"""The worst-case cost a gateway reserves for a request before forwarding it."""

from __future__ import annotations

from datetime import datetime

from producers.gateway.config import provider_for
from tokenledger.guard import WorstCase
from tokenledger.pricing import PriceTable, UsageRecord, price


def worst_case_pricer(table: PriceTable) -> WorstCase:
    """Price ``prompt`` tokens uncached plus ``max_output`` output tokens, at ``now``'s prices."""

    def worst_case(model: str, prompt_tokens: int, max_output: int, now: datetime) -> int:
        usage = UsageRecord(provider_for(model), model, prompt_tokens, max_output)
        return price(usage, now, table).total_nanos

    return worst_case
