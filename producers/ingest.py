"""``python -m producers.ingest serve``: usage events over HTTP from services in any language.

Two endpoints: ``POST /v1/events`` (CloudEvents, below) and ``POST /v1/traces`` (OTLP/HTTP,
protobuf or JSON: spans with GenAI usage become usage events, see :mod:`producers.otlp`;
point any OpenTelemetry exporter at it with the same bearer key).

``POST /v1/events`` takes CloudEvents in the v1 schema of the stream, in the three modes of the
CloudEvents HTTP binding: structured (``application/cloudevents+json``, one event), batched
(``application/cloudevents-batch+json``, a JSON array) and binary (``application/json`` with
the attributes in ``ce-*`` headers, the body as ``data``); plain ``application/json`` without
``ce-*`` headers may be one event or an array. Other media types answer 415. The body is read
whole, however it is paced or chunked, up to the limit (413 beyond, chunked or not).
Authentication is a per-tenant API key (``Authorization: Bearer <key>``, the scheme in any
case), stored as its sha256 in the keys file: **the tenant comes from the key**. An event
without ``data.labels.tenant`` gets the key's tenant; an event naming another tenant is
refused, and so is an event dated more than 5 minutes after arrival or more than 30 days
before it (``tokenledger.event_time``; older usage goes through ``python -m billing backfill``).

Answers (every error is JSON, ``{"error": {"code", "message"}}``):

* ``202 {"accepted": n}`` once the broker acknowledged every accepted event;
* ``207`` with ``accepted`` and a ``rejected`` list (index, id, reason) when some events of a
  batch are invalid: the valid ones are published, not lost with the others;
* ``400`` when none is valid, ``401`` without a known key, ``413`` over the body size or batch
  length limits, ``415`` for other media types, ``503`` (``Retry-After``) when the broker did
  not acknowledge in time; resending is safe: events are idempotent by ``(tenant, source, id)``
  and requests by ``(tenant, source, request_id)`` downstream.

``/healthz``, ``/readyz`` (the broker answers) and ``/metrics`` on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import orjson
from aiohttp import web
from confluent_kafka import KafkaError, Producer
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from pydantic import BaseModel, ConfigDict, Field

from producers.otlp import DEFAULT_MAPPING, map_spans, spans_from_json, spans_from_protobuf
from tokenledger import metrics, quiet
from tokenledger.control.follow import follow, load_seed
from tokenledger.control.state import ControlState
from tokenledger.errors import ConfigError, cli_errors, load_yaml_model
from tokenledger.event_time import epoch_us, outside_window
from tokenledger.health import HEALTH, answer
from tokenledger.http_edge import MAX_BODY, bearer_token, error_response, json_errors, json_response
from tokenledger.identity import placement_key
from tokenledger.kafka_config import KafkaSettings
from tokenledger.schema.fastdecode import InvalidEvent, decode_usage_event
from tokenledger.schema.raw_batch import encode_batch, partition_for

log = logging.getLogger(__name__)
BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"
EVENT_TYPES = frozenset({BATCH, STRUCTURED, "application/json"})

INGESTED = metrics.counter("tokenledger_ingest_events_total", "HTTP ingest: events by outcome", ["outcome"])
OTLP_SPANS = metrics.counter("tokenledger_ingest_otlp_spans_total", "OTLP ingest: spans by outcome", ["outcome"])


class IngestKey(BaseModel):
    """One API key (sha256 hex of the bearer token) and the tenant it writes for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    tenant: str
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class IngestKeys(BaseModel):
    """The keys file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    keys: tuple[IngestKey, ...] = ()

    def tenant_of(self, authorization: str | None) -> str | None:
        """The tenant a bearer token writes for, or None."""
        token = bearer_token(authorization)
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        found = [k.tenant for k in self.keys if hmac.compare_digest(k.key_sha256, digest)]
        return found[0] if found else None


class TenantOfKey(Protocol):
    """Who a bearer token writes for: a keys file, or the live control plane."""

    def tenant_of(self, authorization: str | None) -> str | None:
        """The tenant, or None for a missing, unknown or revoked key."""
        ...


KEYS = frozenset({"key"})


class ControlKeys:
    """The control plane's live ingest keys: a key issued or revoked through the admin API counts at once."""

    def __init__(self, state: ControlState) -> None:
        self.state = state

    def tenant_of(self, authorization: str | None) -> str | None:
        """The tenant of a live ingest key."""
        token = bearer_token(authorization)
        if token is None:
            return None
        key = self.state.key_for(hashlib.sha256(token.encode()).hexdigest(), "ingest")
        return None if key is None else key.tenant


@dataclass(frozen=True)
class Limits:
    """Request limits (a client over them gets 413)."""

    max_body_bytes: int = 1 << 20
    max_batch: int = 1000
    ack_timeout_s: float = 10.0


@dataclass
class Checked:
    """One batch after validation: wire payloads to publish and per-event refusals."""

    accepted: list[tuple[bytes, bytes]] = field(default_factory=list)  # (kafka key, value)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def binary_event(headers: Mapping[str, str], data: Any, content_type: str) -> dict[str, Any]:
    """A CloudEvent sent in HTTP binary mode: attributes from ``ce-*`` headers, the body as ``data``.

    Header values are percent-decoded (CloudEvents HTTP binding 3.1.3.2); the media type of
    ``Content-Type`` becomes ``datacontenttype``.
    """
    doc: dict[str, Any] = {}
    for name, value in headers.items():
        if name.lower().startswith("ce-") and len(name) > 3:
            doc[name[3:].lower()] = unquote(value)
    doc["datacontenttype"] = content_type
    doc["data"] = data
    return doc


def check_events(docs: list[Any], tenant: str, now: datetime) -> Checked:
    """Validate each event with the stream's schema, the key's tenant and the time window applied (pure).

    The window: no later than ``now`` + 5 minutes, no earlier than ``now`` - 30 days.
    """
    out = Checked()
    for i, doc in enumerate(docs):
        ident = _printable_id(doc.get("id")) if isinstance(doc, Mapping) else None
        try:
            verdict = _check_one(doc, tenant, now)
        except (ValueError, TypeError) as exc:  # e.g. an integer JSON can carry but not re-encode
            verdict = f"not a valid event: {exc}"
        if isinstance(verdict, str):
            out.rejected.append({"index": i, "id": ident, "reason": verdict})
        else:
            out.accepted.append(verdict)
    return out


def _printable_id(ident: Any) -> str | None:
    return ident[:128] if isinstance(ident, str) else None


def _check_one(doc: Any, tenant: str, now: datetime) -> tuple[bytes, bytes] | str:
    """``(kafka key, value)`` of a valid event, else the reason it is refused."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    data = doc.get("data")
    labels = data.get("labels") if isinstance(data, dict) else None
    if isinstance(labels, dict):
        named = labels.get("tenant")
        if named is None:
            labels["tenant"] = tenant
        elif named != tenant:
            return f"tenant {named!r} is not this key's tenant"
    try:
        event = decode_usage_event(orjson.dumps(doc))
    except InvalidEvent as exc:
        return exc.reason
    late = outside_window(epoch_us(event.time), epoch_us(now), "arrival")
    if late is not None:
        return late
    return placement_key(event), orjson.dumps(doc)


class BrokerAway(Exception):
    """The broker did not acknowledge every event in time."""


class AckingProducer:
    """Publishes a batch and waits until the broker acknowledged each message.

    The events of a request go out as one message per partition (a JSON batch of the events
    whose keys Kafka's murmur2 partitioner puts there, see ``tokenledger.schema.raw_batch``):
    the pipeline then pays its per-message cost once per partition, not once per event.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._topic = settings.topics.usage_raw
        self._producer = Producer(
            {
                **settings.producer_config(),
                "linger.ms": 2,
                "partitioner": "murmur2_random",
            }
        )
        self._partitions: int | None = None
        self._settings = settings
        self._lock = threading.Lock()
        self._polling = True
        self._poller = threading.Thread(target=self._poll, name="ingest-acks", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while self._polling:
            self._producer.poll(0.05)

    async def publish(self, messages: list[tuple[bytes, bytes]], timeout_s: float) -> None:
        """Produce ``messages`` and wait for every acknowledgement.

        Raises:
            BrokerAway: Not all acknowledged within ``timeout_s`` (some may still arrive).
        """
        loop = asyncio.get_running_loop()
        outgoing = self._group(messages)
        pending = [loop.create_future() for _ in outgoing]

        def done(fut: asyncio.Future[None]) -> Any:
            def on_delivery(err: KafkaError | None, _msg: Any) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            return on_delivery

        with self._lock:
            for (key, value, partition), fut in zip(outgoing, pending, strict=True):
                if partition is None:
                    self._producer.produce(self._topic, value, key, on_delivery=done(fut))
                else:
                    self._producer.produce(self._topic, value, key, partition=partition, on_delivery=done(fut))
        try:
            await asyncio.wait_for(asyncio.gather(*pending), timeout_s)
        except (TimeoutError, KafkaDeliveryError) as exc:
            raise BrokerAway(str(exc) or "no acknowledgement in time") from exc

    def _group(self, messages: list[tuple[bytes, bytes]]) -> list[tuple[bytes | None, bytes, int | None]]:
        """``(key, value, partition)`` to produce: one batch per partition, or the messages as they are."""
        if self._partitions is None:
            try:
                meta = self._producer.list_topics(self._topic, timeout=5)
                self._partitions = len(meta.topics[self._topic].partitions) or None
            except Exception:  # the broker is away: keyed messages, partitioned by the client
                return [(key, value, None) for key, value in messages]
        if self._partitions is None or len(messages) < 2:
            return [(key, value, None) for key, value in messages]
        groups: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in messages:
            groups.setdefault(partition_for(key, self._partitions), []).append((key, value))
        return [
            (group[0][0], group[0][1], None) if len(group) == 1 else (None, encode_batch([v for _, v in group]), p)
            for p, group in groups.items()
        ]

    def ready(self) -> str | None:
        """None when the broker answers a metadata request."""
        try:
            self._producer.list_topics(self._topic, timeout=2)
        except Exception as exc:  # any client failure means not ready
            return f"broker not answering: {exc}"
        return None

    def close(self) -> None:
        """Flush and stop the poller."""
        self._producer.flush(10)
        self._polling = False


class KafkaDeliveryError(Exception):
    """The broker refused a message."""


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaDeliveryError(err.str()))


class Ingest:
    """The two ingest endpoints over one producer and one key set."""

    def __init__(
        self,
        keys: TenantOfKey,
        producer: AckingProducer,
        limits: Limits,
        mapping: Mapping[str, tuple[str, ...]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.keys, self.producer, self.limits, self.mapping, self.clock = keys, producer, limits, mapping, clock

    async def _body(self, request: web.Request) -> bytes:
        """The whole body, however it is paced or chunked (aiohttp answers 413 past the limit)."""
        if request.content_length is not None and request.content_length > self.limits.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.limits.max_body_bytes, actual_size=request.content_length)
        return await request.read()

    async def traces(self, request: web.Request) -> web.Response:
        """OTLP/HTTP traces (protobuf or JSON): GenAI spans become usage events, others are ignored."""
        tenant = self.keys.tenant_of(request.headers.get("Authorization"))
        if tenant is None:
            return error_response(401, "unknown or missing API key", {"WWW-Authenticate": "Bearer"})
        if request.content_type not in ("application/x-protobuf", "application/json"):
            return error_response(
                415, f"{request.content_type} is not OTLP/HTTP: send application/x-protobuf or application/json"
            )
        body = await self._body(request)
        proto = request.content_type == "application/x-protobuf"
        try:
            spans = list(spans_from_protobuf(body) if proto else spans_from_json(orjson.loads(body)))
        except (DecodeError, orjson.JSONDecodeError, ValueError, TypeError, AttributeError, KeyError) as exc:
            return error_response(400, f"not an OTLP trace export: {exc}")
        mapped = map_spans(iter(spans), tenant, self.mapping)
        checked = check_events(mapped.events, tenant, self.clock())
        OTLP_SPANS.labels("ignored").inc(mapped.ignored)
        rejected = [*mapped.rejected, *(r["reason"] for r in checked.rejected)]
        OTLP_SPANS.labels("rejected").inc(len(rejected))
        if checked.accepted:
            try:
                await self.producer.publish(checked.accepted, self.limits.ack_timeout_s)
            except BrokerAway as exc:
                metrics.TRANSIENT.labels("ingest", "broker").inc()
                return error_response(503, f"broker did not acknowledge: {exc}", {"Retry-After": "5"})
            OTLP_SPANS.labels("accepted").inc(len(checked.accepted))
        reply = ExportTraceServiceResponse()
        if rejected:
            reply.partial_success.rejected_spans = len(rejected)
            reply.partial_success.error_message = "; ".join(rejected[:5])
        if proto:
            return web.Response(body=reply.SerializeToString(), content_type="application/x-protobuf")
        doc = {"partialSuccess": {"rejectedSpans": len(rejected), "errorMessage": reply.partial_success.error_message}}
        return json_response(200, doc if rejected else {})

    async def events(self, request: web.Request) -> web.Response:  # noqa: PLR0911 - one return per HTTP outcome
        """CloudEvents (structured, batched or binary mode): validated, tenant from the key, published."""
        tenant = self.keys.tenant_of(request.headers.get("Authorization"))
        if tenant is None:
            return error_response(401, "unknown or missing API key", {"WWW-Authenticate": "Bearer"})
        ctype = request.content_type
        binary = any(h.lower().startswith("ce-") for h in request.headers)
        if ctype not in EVENT_TYPES or (binary and ctype != "application/json"):
            return error_response(
                415,
                f"{ctype} is not a CloudEvents JSON encoding: send {STRUCTURED}, {BATCH}, or application/json "
                "(one event, a JSON array of events, or binary mode with ce-* headers)",
            )
        body = await self._body(request)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"not JSON: {exc}")
        if binary:
            parsed = binary_event(request.headers, parsed, ctype)
        if ctype == BATCH and not isinstance(parsed, list):
            return error_response(400, f"{BATCH} must be a JSON array")
        if ctype == STRUCTURED and not isinstance(parsed, dict):
            return error_response(400, f"{STRUCTURED} must be one JSON object (send a batch as {BATCH})")
        docs = parsed if isinstance(parsed, list) else [parsed]
        if not docs:
            return error_response(400, "an empty batch: no event to ingest")
        if len(docs) > self.limits.max_batch:
            return error_response(413, f"batch over {self.limits.max_batch} events")
        checked = check_events(docs, tenant, self.clock())
        INGESTED.labels("rejected").inc(len(checked.rejected))
        if checked.accepted:
            try:
                await self.producer.publish(checked.accepted, self.limits.ack_timeout_s)
            except BrokerAway as exc:
                INGESTED.labels("unacknowledged").inc(len(checked.accepted))
                metrics.TRANSIENT.labels("ingest", "broker").inc()
                return error_response(503, f"broker did not acknowledge: {exc}", {"Retry-After": "5"})
            INGESTED.labels("accepted").inc(len(checked.accepted))
        doc: dict[str, Any] = {"accepted": len(checked.accepted)}
        if checked.rejected:
            doc["rejected"] = checked.rejected
        status = 202 if not checked.rejected else (207 if checked.accepted else 400)
        return json_response(status, doc)

    async def probe(self, request: web.Request) -> web.Response:
        """``/healthz``, ``/readyz``, ``/metrics``."""
        status, body, ctype = answer(request.path) or (404, b"{}", "application/json")
        return web.Response(status=int(status), body=body, headers={"Content-Type": ctype})


def make_app(
    keys: TenantOfKey,
    producer: AckingProducer,
    limits: Limits = Limits(),
    mapping: Mapping[str, tuple[str, ...]] = DEFAULT_MAPPING,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """The aiohttp application."""
    ingest = Ingest(keys, producer, limits, mapping, clock)
    HEALTH.ready["broker"] = producer.ready
    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[json_errors])
    app[MAX_BODY] = limits.max_body_bytes
    app.router.add_post("/v1/events", ingest.events)
    app.router.add_post("/v1/traces", ingest.traces)
    for path in ("/healthz", "/readyz", "/metrics"):
        app.router.add_get(path, ingest.probe)
    return app


@cli_errors("python -m producers.ingest")
def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    ap = argparse.ArgumentParser(prog="python -m producers.ingest", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="the HTTP ingest endpoint")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8070)
    serve.add_argument(
        "--keys",
        type=Path,
        help="static keys from a YAML file (keys: [{name, tenant, key_sha256}]) instead of the control plane's "
        "live ingest keys (the default)",
    )
    serve.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes)
    serve.add_argument("--max-batch", type=int, default=Limits.max_batch)
    serve.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="DIMENSION=ATTRIBUTE",
        help="OTLP: read a dimension (department, project, user, feature, environment) from a span or "
        "resource attribute, e.g. department=team.name (repeatable; replaces that dimension's defaults)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    settings = KafkaSettings.from_env()
    quiet.install(settings, "ingest")
    control = None
    if args.keys is not None:
        keys: TenantOfKey = load_yaml_model(IngestKeys, args.keys)
    else:
        control = follow(settings, seed=load_seed(KEYS), kinds=KEYS, hold=KEYS, actor="ingest")
        keys = ControlKeys(control.state)
    producer = AckingProducer(settings)
    mapping = dict(DEFAULT_MAPPING)
    for item in args.map:
        dimension, _, attribute = item.partition("=")
        if dimension not in DEFAULT_MAPPING or not attribute:
            raise ConfigError(
                f"--map {item!r}: expected DIMENSION=ATTRIBUTE with a dimension of {sorted(DEFAULT_MAPPING)}"
            )
        mapping[dimension] = (attribute,)
    app = make_app(keys, producer, Limits(args.max_body_bytes, args.max_batch), mapping)
    try:
        web.run_app(
            app, host=args.host, port=args.port, print=lambda _: print(f"ingest on http://{args.host}:{args.port}")
        )
    finally:
        producer.close()
        if control is not None:
            control.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
