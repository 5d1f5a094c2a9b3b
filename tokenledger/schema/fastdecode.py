"""Fast decode path for stream jobs: msgspec structs mirroring :mod:`tokenledger.schema.v1`.

msgspec decodes and validates an event in about a microsecond. The pydantic model stays the
authority: when msgspec rejects a payload, pydantic re-validates it, so a rejection always
carries pydantic's reason and a payload pydantic accepts is never lost. The agreement of the
two paths is a tested property (``tests/unit/test_fastdecode.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from pydantic import ValidationError

from tokenledger.schema.v1 import LABEL_MAX_LEN, MAX_TOKENS, UsageEventV1, token_subset_problem

# Python's ``re`` lets ``$`` match before a trailing newline; ``\Z`` is a true end anchor,
# equivalent to ``$`` in the Rust regex pydantic uses.
_PRINTABLE = r"^[!-~]+\Z"
_LABEL = r"^[^\x00-\x1f\x7f]+\Z"

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_PRINTABLE)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_PRINTABLE)]
ProviderName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*\Z")]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_PRINTABLE)]
TraceId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+\Z")]
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
LabelValue = Annotated[str, msgspec.Meta(min_length=1, max_length=LABEL_MAX_LEN, pattern=_LABEL)]
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_LABEL)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class FastLabels(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`tokenledger.schema.v1.Labels`."""

    tenant: LabelValue
    user: LabelValue | None = None
    department: LabelValue | None = None
    project: LabelValue | None = None
    feature: LabelValue | None = None
    environment: LabelValue | None = None
    api_key: LabelValue | None = None


class FastUsageData(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`tokenledger.schema.v1.UsageDataV1`."""

    provider: ProviderName
    model: ModelName
    input_tokens: TokenCount
    output_tokens: TokenCount
    usage_source: Literal["provider", "estimated"]
    request_id: EventId
    labels: FastLabels
    cached_read_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    stream_seq: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 0
    final: bool = True
    batch: bool = False
    trace_id: TraceId | None = None
    span_id: TraceId | None = None
    parent_span_id: TraceId | None = None


class FastUsageEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """Mirror of :class:`tokenledger.schema.v1.UsageEventV1`."""

    specversion: Literal["1.0"]
    id: EventId
    source: Source
    type: Literal["dev.tokenledger.usage.v1"]
    time: AwareTime
    data: FastUsageData
    subject: Subject | None = None
    datacontenttype: Literal["application/json"] = "application/json"

    @property
    def identity(self) -> tuple[str, str]:
        """The idempotency key ``(source, id)``."""
        return (self.source, self.id)


class InvalidEvent(ValueError):
    """A payload that is not a valid v1 usage event; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_decoder = msgspec.json.Decoder(FastUsageEvent)


def decode_usage_event(raw: bytes) -> FastUsageEvent:
    """Decode and validate one JSON-encoded v1 usage event.

    Args:
        raw: The Kafka message value.

    Returns:
        The validated event.

    Raises:
        InvalidEvent: With pydantic's validation message as the reason.
    """
    try:
        event = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        # msgspec raises UnicodeDecodeError (not DecodeError) for invalid UTF-8 in a string.
        return _authoritative(raw)
    d = event.data
    if token_subset_problem(
        d.input_tokens, d.output_tokens, d.cached_read_tokens, d.cache_write_tokens, d.reasoning_tokens
    ):
        return _authoritative(raw)
    return event


def _authoritative(raw: bytes) -> FastUsageEvent:
    """Let pydantic decide a payload msgspec refused; keep it if pydantic accepts it."""
    try:
        model = UsageEventV1.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(_reason(exc)) from None
    except ValueError as exc:  # anything else a hostile payload provokes is a reason, not a crash
        raise InvalidEvent(f"undecodable payload: {exc}") from None
    return _decoder.decode(model.model_dump_json(exclude_none=True))


def _reason(exc: ValidationError) -> str:
    """One-line, bounded reason: the location and message of each error."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; (+{more} more)" if more > 0 else "")


def encode_usage_event(event: UsageEventV1 | FastUsageEvent) -> bytes:
    """Serialize an event to its wire form (JSON, ``None`` members omitted)."""
    if isinstance(event, UsageEventV1):
        return event.model_dump_json(exclude_none=True).encode()
    return msgspec.json.encode(event)
