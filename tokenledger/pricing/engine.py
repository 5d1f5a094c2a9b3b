"""The pure pricing function: usage x instant x price table -> integer nano-USD per component."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from tokenledger.pricing.model import Cost, PriceSpec, PriceTable, Rates, UsageLike

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
    batched = bool(usage.batch and spec.batch_discount)
    ratios, flags = _ratios(spec, rates, batched)
    (n_in, d_in), (n_cr, d_cr), (n_cw, d_cw), (n_out, d_out), (n_rs, d_rs) = ratios
    cached_read, cache_write, reasoning = usage.cached_read_tokens, usage.cache_write_tokens, usage.reasoning_tokens
    return Cost(  # most requests have no cached or reasoning tokens: those components are 0 without dividing
        input_nanos=_half_even(uncached_input * n_in, d_in) if uncached_input else 0,
        cached_read_nanos=_half_even(cached_read * n_cr, d_cr) if cached_read else 0,
        cache_write_nanos=_half_even(cache_write * n_cw, d_cw) if cache_write else 0,
        output_nanos=_half_even(visible_output * n_out, d_out) if visible_output else 0,
        reasoning_nanos=_half_even(reasoning * n_rs, d_rs) if reasoning else 0,
        price_version=spec.version_id,
        flags=flags,
    )


Ratio = tuple[int, int]
Ratios = tuple[Ratio, Ratio, Ratio, Ratio, Ratio]  # input, cached read, cache write, output, reasoning


def _ratios(spec: PriceSpec, rates: Rates, batched: bool) -> tuple[Ratios, frozenset[str]]:
    """Exact nano-USD per token of each component as ``(numerator, denominator)``, and the cost's flags.

    Computed once per spec, rates and batch flag: the hot path then multiplies and divides
    integers, and rounds half-to-even once per component, as the Decimal arithmetic did.
    """
    key = (id(spec), id(rates), batched)
    found = _RATIOS.get(key)
    if found is not None and found[0] is spec and found[1] is rates:
        return found[2], found[3]
    factor = _NANOS_PER_TOKEN_PER_USD_PER_MTOK
    flags = spec.flags
    if batched:
        factor = factor * (1 - spec.batch_discount)
        flags = flags | {"batch_discount"}

    def ratio(rate: Decimal | None, default: Decimal) -> Ratio:
        return ((default if rate is None else rate) * factor).as_integer_ratio()

    ratios = (
        ratio(rates.input, rates.input),
        ratio(rates.cached_read, rates.input),
        ratio(rates.cache_write, rates.input),
        ratio(rates.output, rates.output),
        ratio(rates.reasoning, rates.output),
    )
    if len(_RATIOS) >= 65_536:
        _RATIOS.clear()
    _RATIOS[key] = (spec, rates, ratios, flags)  # holding spec and rates keeps their ids unique
    return ratios, flags


_RATIOS: dict[
    tuple[int, int, bool], tuple[PriceSpec, Rates, tuple[Ratio, Ratio, Ratio, Ratio, Ratio], frozenset[str]]
] = {}


def _half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to an integer, half-to-even (``denominator > 0``)."""
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q & 1):
        return q + 1
    return q
