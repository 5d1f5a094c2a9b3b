"""The worst-case cost a gateway reserves for a request before forwarding it."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from producers.gateway.config import provider_for
from tokenledger.guard import WorstCase
from tokenledger.pricing import PriceTable, UsageRecord, price

PROMPT_STEP = 256  # prompts are rounded up to this many tokens: still an upper bound, and cacheable


def worst_case_pricer(table: PriceTable) -> WorstCase:
    """Price ``prompt`` tokens uncached plus ``max_output`` output tokens, at ``now``'s prices.

    The prompt is rounded up to a multiple of ``PROMPT_STEP`` tokens (cost is monotonic in
    tokens, so the bound holds) and prices are taken per calendar hour, so repeated requests
    hit a cache instead of the price engine.
    """

    @lru_cache(maxsize=65_536)
    def cached(model: str, prompt_steps: int, max_output: int, hour: datetime) -> int:
        usage = UsageRecord(provider_for(model), model, prompt_steps * PROMPT_STEP, max_output)
        return price(usage, hour, table).total_nanos

    def worst_case(model: str, prompt_tokens: int, max_output: int, now: datetime) -> int:
        hour = now.replace(minute=0, second=0, microsecond=0)
        return cached(model, -(-prompt_tokens // PROMPT_STEP), max_output, hour)

    return worst_case
