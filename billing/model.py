"""Bill documents: plain frozen dataclasses, money in integer nano-units of a stated currency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True)
class Scope:
    """Whose bill: one tenant, one dimension value (e.g. department = research)."""

    tenant: str
    dimension: str
    value: str


@dataclass(frozen=True)
class Summary:
    """Totals of the period. ``*_nanos`` are nano-USD unless named ``_local``."""

    requests: int
    input_tokens: int
    output_tokens: int
    cached_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_nanos: int
    input_nanos: int
    cached_read_nanos: int
    cache_write_nanos: int
    output_nanos: int
    reasoning_nanos: int
    cached_ratio: Decimal
    avg_cost_nanos_per_request: int
    cost_nanos_local: int
    currency: str
    unknown_model_requests: int
    price_versions: int


@dataclass(frozen=True)
class ModelLine:
    """Spend on one provider/model."""

    provider: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    cached_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_nanos: int
    share: Decimal


@dataclass(frozen=True)
class FeatureLine:
    """Spend on one feature."""

    feature: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    share: Decimal


@dataclass(frozen=True)
class DayLine:
    """One calendar day (billing timezone); local amount at that day's FX rate."""

    day: date
    requests: int
    tokens: int
    cost_nanos: int
    cost_nanos_local: int
    fx_rate: Decimal
    fx_rate_date: date | None = None  # the day of the rate used (the last published on or before this day)


@dataclass(frozen=True)
class TopRequest:
    """One of the most expensive requests."""

    event_time: datetime
    source: str
    event_id: str
    request_id: str
    user_id: str
    provider: str
    model: str
    feature: str
    input_tokens: int
    output_tokens: int
    cost_nanos: int


@dataclass(frozen=True)
class Suggestion:
    """An optimisation with its estimated monthly saving (nano-USD, at the period's prices)."""

    kind: str
    title: str
    detail: str
    affected_requests: int
    saving_nanos: int


@dataclass(frozen=True)
class Bill:
    """A monthly bill for one scope."""

    scope: Scope
    period: str
    period_start: datetime
    period_end: datetime
    timezone: str
    currency: str
    rating: str
    generated_at: datetime
    summary: Summary
    by_model: tuple[ModelLine, ...]
    by_feature: tuple[FeatureLine, ...]
    daily: tuple[DayLine, ...]
    top_requests: tuple[TopRequest, ...]
    suggestions: tuple[Suggestion, ...]

    @property
    def best_saving_nanos(self) -> int:
        """The largest single suggestion's saving, nano-USD.

        Suggestions can touch the same requests (a batch-eligible feature on a flagship
        model), so their savings are not added.
        """
        return max((s.saving_nanos for s in self.suggestions), default=0)
