"""The reference gateway: OpenAI-compatible ``POST /v1/chat/completions`` in front of an upstream.

Per request: authenticate the bearer token (sha256 lookup) -> attribution from the key, the
body's ``user``, the ``X-Tokenledger-Feature`` header and W3C ``traceparent`` -> count the
prompt (tiktoken, chat overhead rule) -> ask the :class:`~tokenledger.guard.Guard` ->
either HTTP 429 with an OpenAI-style error body and ``Retry-After``, or forward with the
decided model and an enforced ``max_tokens`` (streams always ask upstream for usage) ->
publish the usage event (streams: running estimates, then the provider's final figure, or
the estimate if the client went away) -> turn the reservation into the actual cost.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from producers.adapters import openai_usage
from producers.events import Attribution, EventFactory
from producers.gateway.config import GatewayConfig, GatewayKey, provider_for
from producers.gateway.messages import openai_error, text_messages
from producers.streaming import OpenAIStreamTracker
from tokenledger import metrics
from tokenledger.guard import Decision, Guard, GuardRequest
from tokenledger.http_edge import bearer_token, json_errors
from tokenledger.pricing import PriceTable, price
from tokenledger.schema import Labels, UsageEventV1
from tokenledger.tokens import count_chat_tokens

SIM_TIME_HEADER = "X-Tokenledger-Sim-Time"
FEATURE_HEADER = "X-Tokenledger-Feature"
_REASONING_PREFIXES = ("o1", "o3", "o4")


class Publisher(Protocol):
    """Where usage events go (``producers.publisher.UsagePublisher``)."""

    def publish(self, event: UsageEventV1) -> None: ...  # noqa: D102


@dataclass
class GatewayStats:
    """Counters and decision latencies (ns) of one gateway instance."""

    decisions: dict[str, int] = field(default_factory=dict)
    decide_ns: list[int] = field(default_factory=list)
    upstream_errors: int = 0
    estimates: int = 0
    aborted_streams: int = 0
    cost_nanos: int = 0
    events: list[UsageEventV1] = field(default_factory=list)  # final events (kept only if asked)
    keep_events: bool = False


def _refusal(d: Decision) -> web.Response:
    kind, code = {
        "throttle": ("requests", "budget_throttled"),
        "deny": ("insufficient_quota", "budget_exceeded"),
    }[d.action]
    if "unavailable" in d.reason:
        code = "budget_unavailable"
    headers = {
        "Retry-After": str(d.retry_after_s or 1),
        "X-Tokenledger-Decision": d.action,
        "X-Tokenledger-Budget": d.budget_id or "",
    }
    return openai_error(429, d.reason, kind, code, headers)


def _trace(header: str | None) -> tuple[str | None, str | None, str | None]:
    """``(trace_id, span_id, parent_span_id)``: this call is a child span of the caller's."""
    parts = (header or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        return parts[1], secrets.token_hex(8), parts[2]
    return None, None, None


@dataclass(frozen=True)
class _Call:
    """One admitted request on its way upstream."""

    decision: Decision
    ticket: int
    who: Attribution
    rid: str
    now: datetime
    messages: list[dict[str, str]]

    @property
    def headers(self) -> dict[str, str]:
        """What the gateway tells the caller about its decision."""
        return {
            "X-Tokenledger-Decision": self.decision.action,
            "X-Tokenledger-Model": self.decision.model,
            "X-Tokenledger-Max-Tokens": str(self.decision.max_tokens),
        }


class Gateway:
    """Request handling; one instance per process."""

    def __init__(
        self,
        config: GatewayConfig,
        guard: Guard,
        publisher: Publisher,
        table: PriceTable,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        trust_sim_time: bool = False,
        upstream_api_key: str = "",
    ) -> None:
        """Create the gateway.

        Args:
            config: Upstream, limits, keys.
            guard: Budget decisions (fed by a ``BreakerClient``).
            publisher: Where usage events go.
            table: Prices (to turn a reservation into the actual cost).
            clock: Request time.
            rng: Draws for the throttle rule.
            trust_sim_time: Take the request time from ``X-Tokenledger-Sim-Time`` (demo, tests).
            upstream_api_key: Bearer token for the upstream.
        """
        self.config, self.guard, self.publisher, self.table = config, guard, publisher, table
        self._clock, self._rng, self._trust_sim = clock, rng or random.Random(), trust_sim_time
        self._upstream_key = upstream_api_key
        self._keys = {k.key_sha256: k for k in config.keys}
        self.stats = GatewayStats()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[json_errors])  # every error JSON
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/readyz", self.ready)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600, sock_connect=10))

    async def _close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def health(self, _request: web.Request) -> web.Response:
        """Feed status and decision counters."""
        doc = {
            "bootstrapped": self.guard.bootstrapped,
            "breakers": len(self.guard.breakers()),
            "decisions": self.stats.decisions,
        }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def ready(self, _request: web.Request) -> web.Response:
        """200 once the breaker feed is bootstrapped (decisions use every budget's state), else 503."""
        ok = self.guard.bootstrapped
        doc = {"status": "ok" if ok else "failing", "failing": {} if ok else {"breakers": "feed not bootstrapped"}}
        return web.Response(body=orjson.dumps(doc), status=200 if ok else 503, content_type="application/json")

    async def metrics(self, _request: web.Request) -> web.Response:
        """Prometheus exposition of this process's metrics."""
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _key(self, request: web.Request) -> GatewayKey | None:
        token = bearer_token(request.headers.get("Authorization"))  # the scheme in any case (RFC 7235)
        if token is None:
            return None
        return self._keys.get(hashlib.sha256(token.encode()).hexdigest())

    def _now(self, request: web.Request) -> datetime:
        sim = request.headers.get(SIM_TIME_HEADER) if self._trust_sim else None
        if sim:
            at = datetime.fromisoformat(sim)
            if at.tzinfo is not None:
                return at
        return self._clock()

    def decide(self, req: GuardRequest, now: datetime) -> Decision:
        """Ask the guard, timing the decision."""
        t0 = time.perf_counter_ns()
        d = self.guard.decide(req, now, time.monotonic(), self._rng.random())
        elapsed = time.perf_counter_ns() - t0
        self.stats.decide_ns.append(elapsed)
        metrics.GATEWAY_DECISION.observe(elapsed / 1e9)
        metrics.GATEWAY_DECISIONS.labels(d.action).inc()
        self.stats.decisions[d.action] = self.stats.decisions.get(d.action, 0) + 1
        return d

    def _attribution(self, request: web.Request, key: GatewayKey, body: dict[str, Any]) -> Attribution | str:
        """Who the call is billed to, or why the request's attribution is invalid."""
        given = {
            "tenant": key.tenant,
            "department": key.department,
            "project": key.project,
            "environment": key.environment,
            "api_key": key.name,
            "user": str(body.get("user") or ""),
            "feature": request.headers.get(FEATURE_HEADER, "default"),
        }
        labels = {k: v for k, v in given.items() if v}
        try:
            Labels(**labels)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"invalid attribution {'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
        trace_id, span_id, parent = _trace(request.headers.get("traceparent"))
        return Attribution(self.config.source, labels, trace_id, span_id, parent)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        key = self._key(request)
        if key is None:
            return openai_error(401, "invalid or missing API key", "invalid_request_error", "invalid_api_key")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(model, str) or not isinstance(body.get("messages"), list):
            return openai_error(
                400, "a JSON body with 'model' and 'messages' is required", "invalid_request_error", None
            )
        who = self._attribution(request, key, body)
        if isinstance(who, str):
            return openai_error(400, who, "invalid_request_error", None)
        now = self._now(request)
        messages = text_messages(body["messages"])
        prompt_tokens = count_chat_tokens(messages, model)
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        max_tokens = int(asked) if isinstance(asked, int) and asked > 0 else self.config.default_max_tokens
        decision = self.decide(GuardRequest(key.tenant, dict(who.labels), model, prompt_tokens, max_tokens), now)
        if not decision.admitted or decision.ticket is None:
            return _refusal(decision)
        upstream = dict(body)
        upstream["model"] = decision.model
        field_name = "max_completion_tokens" if decision.model.startswith(_REASONING_PREFIXES) else "max_tokens"
        upstream.pop("max_tokens", None)
        upstream.pop("max_completion_tokens", None)
        upstream[field_name] = decision.max_tokens
        call = _Call(decision, decision.ticket, who, f"gw-{uuid.uuid4().hex}", now, messages)
        if body.get("stream"):
            upstream["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, upstream, call, wants_usage=wants_usage)
        return await self._unary(upstream, call)

    async def _post(self, upstream: dict[str, Any]) -> aiohttp.ClientResponse:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if self._upstream_key:
            headers["Authorization"] = f"Bearer {self._upstream_key}"
        return await self._session.post(
            f"{self.config.upstream.rstrip('/')}/v1/chat/completions", data=orjson.dumps(upstream), headers=headers
        )

    def _publish_estimate(self, event: UsageEventV1) -> None:
        """Running estimates of a stream go out as they come; the final event is settled."""
        if not event.data.final:
            self.publisher.publish(event)
            self.stats.estimates += 1

    def _settle(self, ticket: int, event: UsageEventV1) -> None:
        """Publish the final event and replace the reservation by the priced cost."""
        self.publisher.publish(event)
        metrics.EVENTS.labels("gateway", "published").inc()
        cost = price(event.data, event.time, self.table).total_nanos
        self.guard.complete(ticket, cost, event.time, time.monotonic())
        self.stats.cost_nanos += cost
        if self.stats.keep_events:
            self.stats.events.append(event)

    async def _unary(self, upstream: dict[str, Any], call: _Call) -> web.StreamResponse:
        try:
            async with await self._post(upstream) as up:
                raw = await up.read()
                status = up.status
        except aiohttp.ClientError as exc:
            self.guard.release(call.ticket)
            self.stats.upstream_errors += 1
            return openai_error(502, f"upstream unreachable: {exc}", "api_error", None)
        if status != 200:
            self.guard.release(call.ticket)  # the upstream refused: nothing to bill
            self.stats.upstream_errors += 1
            return web.Response(status=status, body=raw, content_type="application/json")
        doc = orjson.loads(raw)
        event = EventFactory().make(
            call.who,
            provider=provider_for(call.decision.model),
            model=call.decision.model,
            request_id=call.rid,
            usage=openai_usage(doc.get("usage") or {}),
            at=call.now,
        )
        self._settle(call.ticket, event)
        return web.Response(body=raw, content_type="application/json", headers=call.headers)

    async def _stream(
        self, request: web.Request, upstream: dict[str, Any], call: _Call, *, wants_usage: bool
    ) -> web.StreamResponse:
        tracker = OpenAIStreamTracker(
            provider=provider_for(call.decision.model),
            model=call.decision.model,
            request_id=call.rid,
            who=call.who,
            emit=self._publish_estimate,
            prompt_messages=call.messages,
            factory=EventFactory(clock=lambda: call.now),
        )
        try:
            up = await self._post(upstream)
        except aiohttp.ClientError as exc:
            self.guard.release(call.ticket)
            self.stats.upstream_errors += 1
            return openai_error(502, f"upstream unreachable: {exc}", "api_error", None)
        async with up:
            if up.status != 200:
                self.guard.release(call.ticket)
                self.stats.upstream_errors += 1
                return web.Response(status=up.status, body=await up.read(), content_type="application/json")
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **call.headers}
            )
            await resp.prepare(request)
            try:
                async for line in up.content:
                    if not line.startswith(b"data: "):
                        continue
                    payload = line[6:].strip()
                    if payload != b"[DONE]":
                        chunk = orjson.loads(payload)
                        tracker.on_chunk(chunk)
                        if chunk.get("usage") is not None and not wants_usage:
                            continue
                    await resp.write(b"data: " + payload + b"\n\n")
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                self.stats.aborted_streams += 1
            finally:
                # Provider figures when the usage chunk arrived; else the exact estimate so far.
                self._settle(call.ticket, tracker.final or tracker.finish(None))
        return resp
