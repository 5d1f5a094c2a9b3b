"""Usage event, wire schema version 1: a CloudEvents 1.0 envelope around LLM usage.

Token semantics (normalised across providers, as OpenAI and genai-prices count them):

* ``input_tokens`` is the whole prompt, *including* ``cached_read_tokens`` and
  ``cache_write_tokens`` (Anthropic reports these separately: adapters add them up).
* ``output_tokens`` is the whole completion, *including* ``reasoning_tokens``.

Event identity ``(tenant, source, id)`` is the idempotency key (``tokenledger.identity``;
two tenants never collide). A streamed request emits
running estimates (``final=False``) and one ``final=True`` event; all share
``request_id`` and are ordered by ``stream_seq``. A new version is a new model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

EVENT_TYPE_V1 = "dev.tokenledger.usage.v1"
"""CloudEvents ``type`` of this schema version."""

MAX_TOKENS = 1_000_000_000
"""Upper bound on any token count of one event (far above any context window)."""

LABEL_MAX_LEN = 128
"""Longest accepted label value, in characters."""

# Printable ASCII without spaces: ids, sources, model names.
_PRINTABLE_PATTERN = r"^[!-~]+$"
# Any text without control characters: label values.
_LABEL_PATTERN = r"^[^\x00-\x1f\x7f]+$"

EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE_PATTERN)]
Source = Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE_PATTERN)]
ProviderName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE_PATTERN)]
TraceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
LabelValue = Annotated[str, Field(min_length=1, max_length=LABEL_MAX_LEN, pattern=_LABEL_PATTERN)]

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class Labels(BaseModel):
    """Attribution labels. ``tenant`` is required: it scopes access to bills.

    ``api_key`` is a key *identifier* (name or last four characters), never the secret.
    """

    model_config = _STRICT

    tenant: LabelValue
    user: LabelValue | None = None
    department: LabelValue | None = None
    project: LabelValue | None = None
    feature: LabelValue | None = None
    environment: LabelValue | None = None
    api_key: LabelValue | None = None


class UsageDataV1(BaseModel):
    """The ``data`` member: what one LLM call (or one streaming snapshot of it) used."""

    model_config = _STRICT

    provider: ProviderName
    model: ModelName
    input_tokens: TokenCount
    output_tokens: TokenCount
    cached_read_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    usage_source: Literal["provider", "estimated"]
    stream_seq: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    final: bool = True
    batch: bool = False
    request_id: EventId
    trace_id: TraceId | None = None
    span_id: TraceId | None = None
    parent_span_id: TraceId | None = None
    labels: Labels

    @model_validator(mode="after")
    def _subsets_fit(self) -> UsageDataV1:
        problem = token_subset_problem(
            self.input_tokens,
            self.output_tokens,
            self.cached_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        )
        if problem:
            raise ValueError(problem)
        return self


class UsageEventV1(BaseModel):
    """CloudEvents 1.0 structured-mode envelope carrying :class:`UsageDataV1`."""

    model_config = _STRICT

    specversion: Literal["1.0"]
    id: EventId
    source: Source
    type: Literal["dev.tokenledger.usage.v1"]
    time: AwareDatetime
    subject: Annotated[str, Field(min_length=1, max_length=256, pattern=_LABEL_PATTERN)] | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: UsageDataV1

    @property
    def identity(self) -> tuple[str, str, str]:
        """The idempotency key ``(tenant, source, id)``: two tenants' events never collide."""
        return (self.data.labels.tenant, self.source, self.id)


def token_subset_problem(
    input_tokens: int, output_tokens: int, cached_read: int, cache_write: int, reasoning: int
) -> str | None:
    """Check the subset rules shared by the pydantic model and the fast decoder.

    Returns:
        A reason string when the counts are inconsistent, else ``None``.
    """
    if cached_read + cache_write > input_tokens:
        return "cached_read_tokens + cache_write_tokens exceeds input_tokens"
    if reasoning > output_tokens:
        return "reasoning_tokens exceeds output_tokens"
    return None
