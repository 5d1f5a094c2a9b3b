"""The pure pricing function: usage x instant x price table -> integer nano-USD per component."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from tokenledger.money import to_nanos
from tokenledger.pricing.model import Cost, PriceSpec, PriceTable, UsageLike

# USD per 1M tokens -> nano-USD per token: x 1e9 / 1e6.
_NANOS_PER_TOKEN_PER_USD_PER_MTOK = Decimal(1000)


def price(usage: UsageLike, at: datetime, table: PriceTable) -> Cost:
    """Price one request.

    Args:
        usage: Provider, model and token counts (input includes cached read/write; output
            includes reasoning), e.g. a v1 event's ``data``.
        at: When the request was made (timezone-aware); selects the effective price.
        table: Where prices come from.

    Returns:
        Cost per component in nano-USD, each rounded half-to-even once, with the price
        version id and any flags (``unknown_model``, ``batch_discount``...).
    """
    if at.tzinfo is None:
        raise ValueError("pricing needs a timezone-aware timestamp")
    return price_with_spec(usage, table.lookup(usage.provider, usage.model, at, batch=usage.batch))


def price_with_spec(usage: UsageLike, spec: PriceSpec) -> Cost:
    """Price one request with an already resolved :class:`PriceSpec`."""
    rates = spec.rates_for(usage.input_tokens)
    uncached_input = usage.input_tokens - usage.cached_read_tokens - usage.cache_write_tokens
    visible_output = usage.output_tokens - usage.reasoning_tokens
    if uncached_input < 0 or visible_output < 0:
        raise ValueError("token subsets exceed their totals")
    factor = _NANOS_PER_TOKEN_PER_USD_PER_MTOK
    flags = set(spec.flags)
    if usage.batch and spec.batch_discount:
        factor = factor * (1 - spec.batch_discount)
        flags.add("batch_discount")

    def component(tokens: int, rate: Decimal | None, default: Decimal) -> int:
        return to_nanos(tokens * (default if rate is None else rate) * factor)

    return Cost(
        input_nanos=component(uncached_input, rates.input, rates.input),
        cached_read_nanos=component(usage.cached_read_tokens, rates.cached_read, rates.input),
        cache_write_nanos=component(usage.cache_write_tokens, rates.cache_write, rates.input),
        output_nanos=component(visible_output, rates.output, rates.output),
        reasoning_nanos=component(usage.reasoning_tokens, rates.reasoning, rates.output),
        price_version=spec.version_id,
        flags=frozenset(flags),
    )
