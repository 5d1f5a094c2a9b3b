"""Optimisation suggestions with estimated savings: pure functions of aggregates and prices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.config import AdviceConfig
from billing.model import ModelLine, Suggestion
from tokenledger.money import display_money, to_nanos
from tokenledger.pricing import PriceTable, UsageRecord, price_with_spec

_PER_TOKEN = Decimal(1000)  # USD per 1M tokens -> nano-USD per token


def cache_suggestions(
    lines: Iterable[ModelLine], table: PriceTable, at: datetime, cfg: AdviceConfig
) -> list[Suggestion]:
    """Models with long prompts and a low cached-read share.

    Saving = (target share x input - cached tokens) x (input rate - cached rate).
    """
    out = []
    c = cfg.cache
    for m in lines:
        if m.requests < cfg.min_requests or m.input_tokens == 0:
            continue
        ratio = Decimal(m.cached_read_tokens) / m.input_tokens
        if m.input_tokens // m.requests < c.min_avg_input_tokens or ratio >= c.low_ratio:
            continue
        rates = table.lookup(m.provider, m.model, at).rates
        if rates.cached_read is None or rates.cached_read >= rates.input:
            continue
        extra = c.target_ratio * m.input_tokens - m.cached_read_tokens
        saving = to_nanos(extra * (rates.input - rates.cached_read) * _PER_TOKEN)
        if saving <= 0:
            continue
        out.append(
            Suggestion(
                kind="low_cache_ratio",
                title=f"Cache prompt prefixes on {m.model}",
                detail=(
                    f"{m.requests:,} requests average {m.input_tokens // m.requests:,} input tokens but only "
                    f"{ratio:.1%} were cache reads. Keeping system prompts and tools in a stable prefix "
                    f"to reach {c.target_ratio:.0%} saves about {display_money(saving, 'USD')} "
                    f"(before any cache-write premium)."
                ),
                affected_requests=m.requests,
                saving_nanos=saving,
            )
        )
    return out


def downgrade_suggestions(
    rows: Iterable[Mapping[str, Any]], table: PriceTable, at: datetime, cfg: AdviceConfig
) -> list[Suggestion]:
    """Flagship-model requests with short outputs that a cheaper model would likely serve.

    Saving = their actual cost - the same tokens at the cheaper model's price.
    """
    out = []
    for r in rows:
        target = cfg.cheaper_for(str(r["model"]))
        if target is None or int(r["requests"]) < cfg.min_requests:
            continue
        spec = table.lookup(target[0], target[1], at)
        if "unknown_model" in spec.flags:
            continue
        usage = UsageRecord(
            target[0],
            target[1],
            int(r["input_tokens"]),
            int(r["output_tokens"]),
            int(r["cached_read_tokens"]),
            int(r["cache_write_tokens"]),
            int(r["reasoning_tokens"]),
        )
        cheaper = price_with_spec(usage, spec).total_nanos
        saving = int(r["cost_nanos"]) - cheaper
        if saving <= 0:
            continue
        out.append(
            Suggestion(
                kind="cheaper_model",
                title=f"Route short answers from {r['model']} to {target[1]}",
                detail=(
                    f"{int(r['requests']):,} requests on {r['model']} produced under {cfg.short_output_tokens:,} "
                    f"output tokens and cost {display_money(int(r['cost_nanos']), 'USD')}; on {target[1]} "
                    f"the same tokens cost {display_money(cheaper, 'USD')}."
                ),
                affected_requests=int(r["requests"]),
                saving_nanos=saving,
            )
        )
    return out


def batch_suggestions(
    rows: Iterable[Mapping[str, Any]], table: PriceTable, at: datetime, cfg: AdviceConfig
) -> list[Suggestion]:
    """Offline features called synchronously: the provider's batch API bills them at a discount."""
    out = []
    for r in rows:
        if int(r["requests"]) < cfg.min_requests:
            continue
        discount = batch_saving_share(table, str(r["provider"]), str(r["model"]), at)
        saving = to_nanos(int(r["cost_nanos"]) * discount)
        if saving <= 0:
            continue
        out.append(
            Suggestion(
                kind="batch_eligible",
                title=f"Run '{r['feature']}' on the {r['provider']} batch API",
                detail=(
                    f"{int(r['requests']):,} synchronous {r['model']} requests of the offline feature "
                    f"'{r['feature']}' cost {display_money(int(r['cost_nanos']), 'USD')}; the batch API "
                    f"bills {discount:.0%} less."
                ),
                affected_requests=int(r["requests"]),
                saving_nanos=saving,
            )
        )
    return out


def batch_saving_share(table: PriceTable, provider: str, model: str, at: datetime) -> Decimal:
    """Share of a typical request's cost the batch API saves (provider batch prices, else the flat discount).

    Measured on a reference request (10,000 input tokens of which 2,000 cached, 1,000 output)
    when the provider publishes its own batch prices, since those may differ per component.
    """
    batch = table.lookup(provider, model, at, batch=True)
    if "provider_batch_price" not in batch.flags:
        return batch.batch_discount
    ref = UsageRecord(provider, model, input_tokens=10_000, output_tokens=1_000, cached_read_tokens=2_000)
    standard = price_with_spec(ref, table.lookup(provider, model, at)).total_nanos
    if standard <= 0:
        return Decimal(0)
    return Decimal(standard - price_with_spec(ref, batch).total_nanos) / Decimal(standard)
