"""OpenTelemetry GenAI spans -> v1 usage events (pure; the HTTP endpoint is ``producers.ingest``).

A span is a billable LLM call when it carries ``gen_ai.usage.input_tokens`` or
``gen_ai.usage.output_tokens`` (GenAI semantic conventions). Its event:

* ``provider``: ``gen_ai.provider.name``, else the older ``gen_ai.system`` (``gcp.gemini`` ->
  ``google`` and similar spellings normalised); ``model``: ``gen_ai.response.model``, else
  ``gen_ai.request.model``;
* tokens: input, output, ``gen_ai.usage.cache_read.input_tokens`` /
  ``cache_creation.input_tokens`` (inside the input count, as OpenAI reports them; an input
  count smaller than its cached part is taken as exclusive, as Anthropic reports it) and
  ``gen_ai.usage.reasoning.output_tokens`` (inside the output);
* identity: ``id`` = ``<trace id>-<span id>`` and ``source`` = ``//otel/<service.name>``, so a
  re-exported span is the same event; ``request_id``: ``gen_ai.response.id``, else the span id;
* attribution: trace id, span id and parent span id (what allocation uses); ``user`` from
  ``user.id`` / ``enduser.id``; ``environment`` from ``deployment.environment.name``; and a
  configurable attribute -> dimension mapping for department, project, user and feature
  (span attributes first, then resource attributes);
* ``time``: the span's end.

Spans are read from an ``ExportTraceServiceRequest`` either as protobuf or as OTLP/JSON (where
ids are hex strings).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

DEFAULT_MAPPING: dict[str, tuple[str, ...]] = {
    "department": ("tokenledger.department", "team.name"),
    "project": ("tokenledger.project", "project.name"),
    "feature": ("tokenledger.feature", "gen_ai.agent.name"),
    "user": ("user.id", "enduser.id"),
    "environment": ("deployment.environment.name", "deployment.environment"),
}
_PROVIDERS = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gemini": "google",
    "google_genai": "google",
    "az.ai.openai": "azure",
    "azure.ai.openai": "azure",
    "aws.bedrock": "bedrock",
    "x_ai": "x-ai",
    "xai": "x-ai",
}


@dataclass(frozen=True)
class Span:
    """The parts of an OTLP span this mapping reads."""

    trace_id: str
    span_id: str
    parent_span_id: str
    end_ns: int
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]


@dataclass
class Mapped:
    """Events made from an export request, and what was left out."""

    events: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0  # spans without GenAI usage
    rejected: list[str] = field(default_factory=list)  # GenAI spans that cannot be billed, with the reason


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def spans_from_protobuf(body: bytes) -> Iterator[Span]:
    """Spans of a protobuf ``ExportTraceServiceRequest``."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    for rs in req.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield Span(
                    s.trace_id.hex(),
                    s.span_id.hex(),
                    s.parent_span_id.hex(),
                    s.end_time_unix_nano,
                    {kv.key: _value(kv.value) for kv in s.attributes},
                    resource,
                )


def _json_value(v: Mapping[str, Any]) -> Any:
    for kind, x in v.items():
        if kind == "arrayValue":
            return [_json_value(i) for i in x.get("values", [])]
        if kind == "kvlistValue":
            return {kv["key"]: _json_value(kv.get("value", {})) for kv in x.get("values", [])}
        if kind == "intValue":
            return int(x)  # OTLP/JSON carries 64-bit integers as strings
        return x
    return None


def _json_attrs(items: Any) -> dict[str, Any]:
    return {kv["key"]: _json_value(kv.get("value", {})) for kv in items or []}


def spans_from_json(doc: Mapping[str, Any]) -> Iterator[Span]:
    """Spans of an OTLP/JSON export request (hex ids)."""
    for rs in doc.get("resourceSpans", []):
        resource = _json_attrs(rs.get("resource", {}).get("attributes"))
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                yield Span(
                    str(s.get("traceId", "")).lower(),
                    str(s.get("spanId", "")).lower(),
                    str(s.get("parentSpanId", "")).lower(),
                    int(s.get("endTimeUnixNano", 0)),
                    _json_attrs(s.get("attributes")),
                    resource,
                )


def _first(span: Span, names: tuple[str, ...]) -> Any:
    for source in (span.attributes, span.resource):
        for name in names:
            v = source.get(name)
            if v not in (None, ""):
                return v
    return None


def _int(span: Span, *names: str) -> int:
    """A token count: an integer (or an integral float, as ``doubleValue`` may carry); anything else refuses the span.

    Raises:
        ValueError: A fractional, non-numeric or boolean count (never truncated silently).
    """
    v = _first(span, names)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"span {span.span_id}: {names[0]} must be an integer, not {v!r}")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"span {span.span_id}: {names[0]} must be an integer, not {v!r}")
        return int(v)
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"span {span.span_id}: {names[0]} must be an integer, not {v!r}") from None


def usage_event(span: Span, tenant: str, mapping: Mapping[str, tuple[str, ...]] = DEFAULT_MAPPING) -> dict[str, Any]:
    """The v1 usage event of one GenAI span (validated later by the stream's schema).

    Raises:
        ValueError: The span has usage but no provider or model to price it with.
    """
    provider = _first(span, ("gen_ai.provider.name", "gen_ai.system"))
    model = _first(span, ("gen_ai.response.model", "gen_ai.request.model"))
    if not provider or not model:
        raise ValueError(f"span {span.span_id}: GenAI usage without gen_ai.provider.name/system or a model")
    cache_read = _int(span, "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
    cache_write = _int(span, "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
    inp = _int(span, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    if inp < cache_read + cache_write:  # reported without its cached part (Anthropic's convention)
        inp += cache_read + cache_write
    out = _int(span, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
    reasoning = min(out, _int(span, "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens"))
    labels = {"tenant": tenant}
    for dimension, names in mapping.items():
        value = _first(span, names)
        if value not in (None, ""):
            labels[dimension] = str(value)
    service = str(span.resource.get("service.name") or "unknown")
    data: dict[str, Any] = {
        "provider": _PROVIDERS.get(str(provider).lower(), str(provider).lower()),
        "model": str(model),
        "input_tokens": inp,
        "output_tokens": out,
        "cached_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
        "usage_source": "provider",
        "stream_seq": 0,
        "final": True,
        "batch": False,
        "request_id": str(_first(span, ("gen_ai.response.id",)) or span.span_id),
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "labels": labels,
    }
    if span.parent_span_id:
        data["parent_span_id"] = span.parent_span_id
    if span.end_ns:  # integer arithmetic: a float of epoch nanoseconds loses the microseconds
        at = datetime.fromtimestamp(span.end_ns // 1_000_000_000, UTC).replace(
            microsecond=span.end_ns // 1000 % 1_000_000
        )
    else:
        at = datetime.now(UTC)
    return {
        "specversion": "1.0",
        "id": f"{span.trace_id}-{span.span_id}",
        "source": f"//otel/{service}",
        "type": "dev.tokenledger.usage.v1",
        "time": at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def is_genai_usage(span: Span) -> bool:
    """Whether a span reports GenAI token usage."""
    names = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens")
    return any(name in span.attributes for name in names)


def map_spans(spans: Iterator[Span], tenant: str, mapping: Mapping[str, tuple[str, ...]] = DEFAULT_MAPPING) -> Mapped:
    """Usage events of the GenAI spans; other spans are counted as ignored."""
    out = Mapped()
    for span in spans:
        if not is_genai_usage(span):
            out.ignored += 1
            continue
        try:
            out.events.append(usage_event(span, tenant, mapping))
        except ValueError as exc:
            out.rejected.append(str(exc))
    return out
