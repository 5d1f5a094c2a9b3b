"""Map a priced event to a ``usage_events`` row (the column list is the contract with sql/)."""

from __future__ import annotations

from typing import Any

from tokenledger.pricing.model import Cost
from tokenledger.schema.fastdecode import FastUsageEvent

USAGE_COLUMNS: tuple[str, ...] = (
    "source",
    "event_id",
    "request_id",
    "event_time",
    "tenant",
    "user_id",
    "department",
    "project",
    "feature",
    "environment",
    "api_key",
    "provider",
    "model",
    "trace_id",
    "span_id",
    "parent_span_id",
    "usage_source",
    "batch",
    "input_tokens",
    "output_tokens",
    "cached_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "input_nanos",
    "cached_read_nanos",
    "cache_write_nanos",
    "output_nanos",
    "reasoning_nanos",
    "cost_nanos",
    "price_version",
    "flags",
)


def usage_row(event: FastUsageEvent, cost: Cost, at: Any = None) -> tuple[Any, ...]:
    """One row in :data:`USAGE_COLUMNS` order. Absent labels are stored as ``''``.

    ``at``: what to store as ``event_time`` instead of the event's datetime (the pricing agent
    passes epoch microseconds, which its Arrow columns take as they are).
    """
    d, lb = event.data, event.data.labels
    return (
        event.source,
        event.id,
        d.request_id,
        event.time if at is None else at,
        lb.tenant,
        lb.user or "",
        lb.department or "",
        lb.project or "",
        lb.feature or "",
        lb.environment or "",
        lb.api_key or "",
        d.provider,
        d.model,
        d.trace_id or "",
        d.span_id or "",
        d.parent_span_id or "",
        d.usage_source,
        d.batch,
        d.input_tokens,
        d.output_tokens,
        d.cached_read_tokens,
        d.cache_write_tokens,
        d.reasoning_tokens,
        cost.input_nanos,
        cost.cached_read_nanos,
        cost.cache_write_nanos,
        cost.output_nanos,
        cost.reasoning_nanos,
        cost.total_nanos,
        cost.price_version,
        sorted(cost.flags),
    )
