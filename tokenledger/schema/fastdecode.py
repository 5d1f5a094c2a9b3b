"""Fast decode path for stream jobs: msgspec structs mirroring :mod:`tokenledger.schema.v1`.

msgspec decodes and validates an event in about a microsecond. The pydantic model stays the
authority: when msgspec rejects a payload, pydantic re-validates it, so a rejection always
carries pydantic's reason and a payload pydantic accepts is never lost. The agreement of the
two paths is a tested property (``tests/unit/test_fastdecode.py``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import ValidationError

from tokenledger.schema.v1 import LABEL_MAX_LEN, MAX_TOKENS, UsageEventV1, token_subset_problem

# Python's ``re`` lets ``$`` match before a trailing newline; ``\Z`` is a true end anchor,
# equivalent to ``$`` in the Rust regex pydantic uses. msgspec would run these patterns with
# ``re`` on every string (~7 µs an event); :func:`_strings_ok` checks the same sets with str
# methods first and runs a pattern only when they cannot decide.
_PRINTABLE = re.compile(r"^[!-~]+\Z")
_LABEL = re.compile(r"^[^\x00-\x1f\x7f]+\Z")
_PROVIDER = re.compile(r"^[a-z0-9][a-z0-9._-]*\Z")
_TRACE = re.compile(r"^[0-9A-Za-z_-]+\Z")

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
ProviderName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
TraceId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
LabelValue = Annotated[str, msgspec.Meta(min_length=1, max_length=LABEL_MAX_LEN)]
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


def _printable(s: str) -> bool:
    """``[!-~]+``: ASCII, printable (no control character, no DEL) and no space."""
    return s.isascii() and s.isprintable() and " " not in s


def _label_ok(s: str) -> bool:
    r"""``[^\x00-\x1f\x7f]+``: printable excludes all of these and a few more (then the pattern decides)."""
    return s.isprintable() or _LABEL.search(s) is not None


def _trace_ok(s: str) -> bool:
    """``[0-9A-Za-z_-]+``."""
    return (s.isascii() and s.isalnum()) or _TRACE.search(s) is not None


def _strings_ok(event: FastUsageEvent) -> bool:
    """Every string matches its pattern of the v1 schema (lengths are checked by msgspec).

    The attribution (source, provider, model, labels, subject) repeats from event to event,
    so each combination is checked once; ids and trace ids are checked every time.
    """
    d = event.data
    # id and request id are both non-empty (msgspec checked their lengths): check them as one
    if not _printable(event.id + d.request_id) or not all(
        trace is None or _trace_ok(trace) for trace in (d.trace_id, d.span_id, d.parent_span_id)
    ):
        return False
    attribution = (event.source, d.provider, d.model, d.labels, event.subject)
    if attribution in _CHECKED:
        return True
    if not (_printable(event.source) and _printable(d.model)) or _PROVIDER.search(d.provider) is None:
        return False
    lb = d.labels
    for label in (lb.tenant, lb.user, lb.department, lb.project, lb.feature, lb.environment, lb.api_key, event.subject):
        if label is not None and not _label_ok(label):
            return False
    if len(_CHECKED) >= 100_000:
        _CHECKED.clear()
    _CHECKED.add(attribution)
    return True


_CHECKED: set[tuple[str, str, str, Any, str | None]] = set()


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
    def identity(self) -> tuple[str, str, str]:
        """The idempotency key ``(tenant, source, id)``: two tenants' events never collide."""
        return (self.data.labels.tenant, self.source, self.id)


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
    if not _strings_ok(event) or token_subset_problem(
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
