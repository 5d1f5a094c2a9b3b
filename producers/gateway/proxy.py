"""The reference gateway: OpenAI's ``POST /v1/chat/completions`` and Anthropic's ``POST /v1/messages``.

Per request: authenticate the key (sha256 lookup; ``Authorization: Bearer`` or Anthropic's
``x-api-key``) -> check what the call claims against the key's grant (its feature, its end
user: 403 outside it) -> attribution from the key, the granted claims and W3C ``traceparent``
-> count the prompt (tiktoken, chat overhead rule; an estimate for Claude) -> the rate limits
(``tokenledger.ratelimit``: requests, tokens, concurrency; in process, or shared by the fleet
through Redis) -> the budgets (:class:`~tokenledger.guard.Guard`) -> either 429 with the
provider's error body, ``Retry-After`` and the rate-limit headers, or forward with the decided
model and an enforced ``max_tokens`` (streams always ask upstream for usage) -> publish the
usage event (streams: running estimates, then the provider's final figure, or the estimate if
the client went away) -> turn the budget reservation into the actual cost and correct the
token buckets with the provider's figures; an upstream error gives everything back.

Every answer carries the rate-limit headers its client parses (OpenAI's ``x-ratelimit-*`` or
Anthropic's ``anthropic-ratelimit-*``) and tokenledger's metering headers: the budget left before
the call, the price version, and (unary calls) the call's cost in nano-USD; a stream ends with
an SSE comment carrying its cost.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from producers.adapters import anthropic_usage, openai_usage
from producers.events import Attribution, EventFactory
from producers.gateway.config import GatewayConfig, GatewayKey, provider_for
from producers.gateway.limit_headers import anthropic_headers, openai_headers
from producers.gateway.messages import anthropic_error, anthropic_messages, openai_error, text_messages
from producers.gateway.shared_budgets import SharedBudgets
from producers.streaming import AnthropicStreamTracker, OpenAIStreamTracker, StreamTracker
from tokenledger import metrics
from tokenledger.control.records import ApiKey
from tokenledger.control.state import ControlState
from tokenledger.guard import Decision, Guard, GuardRequest
from tokenledger.http_edge import bearer_token, json_errors
from tokenledger.pricing import PriceTable, price
from tokenledger.ratelimit import Charge, Plan, Verdict, plan
from tokenledger.schema import Labels, UsageEventV1
from tokenledger.tokens import count_chat_tokens

SIM_TIME_HEADER = "X-Tokenledger-Sim-Time"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FEATURE_HEADER = "X-Tokenledger-Feature"
_REASONING_PREFIXES = ("o1", "o3", "o4")


class Publisher(Protocol):
    """Where usage events go (``producers.publisher.UsagePublisher``)."""

    def publish(self, event: UsageEventV1) -> None: ...  # noqa: D102


class Limits(Protocol):
    """Where the rate-limit buckets live (``producers.gateway.redis_limits``: in process or Redis)."""

    async def admit(self, p: Plan, ticket: str) -> Verdict: ...  # noqa: D102
    async def correct(self, charges: Sequence[tuple[Charge, int]]) -> None: ...  # noqa: D102
    async def finish(self, p: Plan, charges: Sequence[tuple[Charge, int]], ticket: str) -> None: ...  # noqa: D102
    async def release(self, p: Plan, ticket: str) -> None: ...  # noqa: D102
    async def close(self) -> None: ...  # noqa: D102


Style = Literal["openai", "anthropic"]
LIMIT_DECISIONS, CLAIMS_REFUSED = metrics.RATELIMIT_DECISIONS, metrics.CLAIMS_REFUSED


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


def _refusal(d: Decision, style: Style, extra: dict[str, str]) -> web.Response:
    kind, code = {
        "throttle": ("requests", "budget_throttled"),
        "deny": ("insufficient_quota", "budget_exceeded"),
    }[d.action]
    if "unavailable" in d.reason:
        code = "budget_unavailable"
    headers = {
        **extra,
        "Retry-After": str(d.retry_after_s or 1),
        "X-Tokenledger-Decision": d.action,
        "X-Tokenledger-Budget": d.budget_id or "",
    }
    if style == "anthropic":
        return anthropic_error(429, d.reason, headers)
    return openai_error(429, d.reason, kind, code, headers)


def _error(style: Style, status: int, message: str, code: str | None = None) -> web.Response:
    if style == "anthropic":
        return anthropic_error(status, message)
    kind = {401: "invalid_request_error", 403: "permission_error", 502: "api_error"}.get(
        status, "invalid_request_error"
    )
    return openai_error(status, message, kind, code)


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
    style: Style = "openai"
    limits: Plan = field(default_factory=Plan)
    limit_ticket: str = ""
    verdict: Verdict = field(default_factory=lambda: Verdict(True))

    @property
    def headers(self) -> dict[str, str]:
        """What the gateway tells the caller: its decision, the rate-limit headers, the budget left."""
        out = {
            "X-Tokenledger-Decision": self.decision.action,
            "X-Tokenledger-Model": self.decision.model,
            "X-Tokenledger-Max-Tokens": str(self.decision.max_tokens),
        }
        if self.decision.remaining_nanos is not None:
            out["X-Tokenledger-Budget-Remaining-Nanos"] = str(self.decision.remaining_nanos)
        if self.style == "anthropic":
            out.update(anthropic_headers(self.verdict, self.now))
        else:
            out.update(openai_headers(self.verdict))
        return out


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
        limits: Limits | None = None,
        control: ControlState | None = None,
        shared: SharedBudgets | None = None,
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
            limits: Where rate-limit buckets live (in process by default).
            control: The control plane's state (rate limits, live); no limits without it.
            shared: Budget reservations shared by a fleet through Redis (the guard then reserves nothing itself).
        """
        self.config, self.guard, self.publisher, self.table = config, guard, publisher, table
        self._clock, self._rng, self._trust_sim = clock, rng or random.Random(), trust_sim_time
        self._upstream_key = upstream_api_key
        self._keys = {k.key_sha256: k for k in config.keys}
        if limits is None:
            from producers.gateway.redis_limits import LocalLimits  # noqa: PLC0415 - avoids an import cycle

            limits = LocalLimits()
        self.limits: Limits = limits
        self.control = control
        self.shared = shared
        self.stats = GatewayStats()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[json_errors])  # every error JSON
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
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
        await self.limits.close()
        if self.shared is not None:
            await self.shared.close()

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
        """The caller's key: the config file's, or a live gateway key of the control plane (revoked: gone)."""
        token = bearer_token(request.headers.get("Authorization")) or request.headers.get("x-api-key")
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        found = self._keys.get(digest)
        if found is not None or self.control is None:
            return found
        live = self.control.key_for(digest, "gateway")
        return None if live is None else _gateway_key(live)

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

    def _claims(self, request: web.Request, key: GatewayKey, body_user: str) -> tuple[str, str] | str:
        """``(feature, user)`` the call may claim under its key's grant, or why it may not."""
        feature = request.headers.get(FEATURE_HEADER, "default")
        if feature != "default" and feature not in key.features:
            CLAIMS_REFUSED.labels("feature").inc()
            return f"key {key.name} may not claim feature {feature!r} (granted: {', '.join(key.features) or 'none'})"
        if key.user_from == "body":
            return feature, body_user
        user = key.user if key.user_from == "key" else request.headers.get(key.user_header, "")
        if body_user and body_user != user:
            CLAIMS_REFUSED.labels("user").inc()
            source = "is fixed by the key" if key.user_from == "key" else f"comes from {key.user_header}"
            return f"key {key.name}: the end user {source}; the body's user {body_user!r} is not accepted"
        return feature, user

    def _attribution(self, request: web.Request, key: GatewayKey, feature: str, user: str) -> Attribution | str:
        """Who the call is billed to, or why the request's attribution is invalid."""
        given = {
            "tenant": key.tenant,
            "department": key.department,
            "project": key.project,
            "environment": key.environment,
            "api_key": key.name,
            "user": user,
            "feature": feature,
        }
        labels = {k: v for k, v in given.items() if v}
        try:
            Labels(**labels)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"invalid attribution {'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
        trace_id, span_id, parent = _trace(request.headers.get("traceparent"))
        return Attribution(self.config.source, labels, trace_id, span_id, parent)

    async def _admit(
        self,
        request: web.Request,
        style: Style,
        body: dict[str, Any],
        *,
        messages: list[dict[str, str]],
        body_user: str,
        asked: Any,
    ) -> _Call | web.Response:
        """Key, claims, attribution, rate limits, budgets: the admitted call, or the answer refusing it."""
        key = self._key(request)
        if key is None:
            return _error(style, 401, "invalid or missing API key", "invalid_api_key")
        claims = self._claims(request, key, body_user)
        if isinstance(claims, str):
            return _error(style, 403, claims, "claim_not_granted")
        who = self._attribution(request, key, *claims)
        if isinstance(who, str):
            return _error(style, 400, who)
        model = str(body["model"])
        now = self._now(request)
        prompt_tokens = count_chat_tokens(messages, model)
        max_tokens = int(asked) if isinstance(asked, int) and asked > 0 else self.config.default_max_tokens
        reserve_out = max_tokens if isinstance(asked, int) and asked > 0 else self.config.default_output_estimate
        limits = self.control.tenant_limits(key.tenant) if self.control is not None else ()
        p = plan(limits, who.labels, model, prompt_tokens, reserve_out)
        ticket = f"gw-{uuid.uuid4().hex}"
        verdict = await self.limits.admit(p, ticket)
        self._count(p, verdict)
        if not verdict.admitted:
            return self._rate_refusal(verdict, style, now)
        exempt = frozenset(key.exempt_features)
        decision = self.decide(
            GuardRequest(key.tenant, dict(who.labels), model, prompt_tokens, max_tokens, exempt), now
        )
        call = _Call(decision, decision.ticket or 0, who, ticket, now, messages, style, p, ticket, verdict)
        if not decision.admitted or decision.ticket is None:
            await self._give_back(call)
            limit_headers = anthropic_headers(verdict, now) if style == "anthropic" else openai_headers(verdict)
            return _refusal(decision, style, limit_headers)
        return await self._reserve_shared(call, style)

    async def _reserve_shared(self, call: _Call, style: Style) -> _Call | web.Response:
        """A fleet: the call's worst case reserved in every budget it falls in, in Redis, or refused."""
        if self.shared is None:
            return call
        fits, why = await self.shared.reserve(call.decision, call.limit_ticket)
        if fits:
            return call
        await self._give_back(call, shared=False)
        self.guard.release(call.ticket)
        d = call.decision
        denied = Decision("deny", d.model, d.max_tokens, why, why.split(":")[0].removeprefix("budget "), 1)
        limit_headers = (
            anthropic_headers(call.verdict, call.now) if style == "anthropic" else openai_headers(call.verdict)
        )
        return _refusal(denied, style, limit_headers)

    def _count(self, p: Plan, verdict: Verdict) -> None:
        if p.empty:
            return
        for state in verdict.states:
            metrics.RATELIMIT_REMAINING.labels(state.charge.limit_id, state.charge.kind).set(state.remaining)
        if verdict.admitted:
            for c in p.charges:
                LIMIT_DECISIONS.labels(c.limit_id, c.kind, "admitted").inc()
        else:
            LIMIT_DECISIONS.labels(verdict.limited_by or "", verdict.kind or "", "limited").inc()

    def _rate_refusal(self, verdict: Verdict, style: Style, now: datetime) -> web.Response:
        headers = anthropic_headers(verdict, now) if style == "anthropic" else openai_headers(verdict)
        headers["X-Tokenledger-Limit"] = verdict.limited_by or ""
        status = 503 if verdict.unavailable else 429
        if style == "anthropic":
            return anthropic_error(status, verdict.reason, headers)
        code = "rate_limit_unavailable" if verdict.unavailable else "rate_limit_exceeded"
        return openai_error(
            status, verdict.reason, "requests" if verdict.kind == "requests" else "tokens", code, headers
        )

    async def _give_back(self, call: _Call, *, shared: bool = True) -> None:
        """Nothing was used: the rate-limit reservation comes back, the concurrency slot is freed."""
        await self.limits.finish(call.limits, [(c, 0) for c in call.limits.charges], call.limit_ticket)
        if shared and self.shared is not None and call.decision.admitted:
            await self.shared.settle(call.decision, call.limit_ticket, 0, 0)

    async def _upstream_failed(self, call: _Call) -> None:
        self.guard.release(call.ticket)
        self.stats.upstream_errors += 1
        await self._give_back(call)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(model, str) or not isinstance(body.get("messages"), list):
            if self._key(request) is None:
                return openai_error(401, "invalid or missing API key", "invalid_request_error", "invalid_api_key")
            return openai_error(
                400, "a JSON body with 'model' and 'messages' is required", "invalid_request_error", None
            )
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        admitted = await self._admit(
            request,
            "openai",
            body,
            messages=text_messages(body["messages"]),
            body_user=str(body.get("user") or ""),
            asked=asked,
        )
        if isinstance(admitted, web.Response):
            return admitted
        call = admitted
        decision = call.decision
        upstream = dict(body)
        upstream["model"] = decision.model
        field_name = "max_completion_tokens" if decision.model.startswith(_REASONING_PREFIXES) else "max_tokens"
        upstream.pop("max_tokens", None)
        upstream.pop("max_completion_tokens", None)
        upstream[field_name] = decision.max_tokens
        if body.get("stream"):
            upstream["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, upstream, call, wants_usage=wants_usage)
        return await self._unary(upstream, call)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages`` (Anthropic Messages API, streaming too), priced and attributed like chat."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        asked = body.get("max_tokens") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(model, str) or not isinstance(body.get("messages"), list):
            if self._key(request) is None:
                return anthropic_error(401, "invalid x-api-key")
            return anthropic_error(400, "a JSON body with 'model', 'messages' and 'max_tokens' is required")
        if not isinstance(asked, int) or asked <= 0:
            return anthropic_error(400, "max_tokens: a positive integer is required")
        meta = body.get("metadata")
        user = str(meta.get("user_id") or "") if isinstance(meta, dict) else ""
        admitted = await self._admit(
            request, "anthropic", body, messages=anthropic_messages(body), body_user=user, asked=asked
        )
        if isinstance(admitted, web.Response):
            return admitted
        call = admitted
        upstream = {**body, "model": call.decision.model, "max_tokens": call.decision.max_tokens}
        if body.get("stream"):
            return await self._stream_messages(request, upstream, call)
        return await self._unary(upstream, call)

    async def _post(self, upstream: dict[str, Any], style: Style = "openai") -> aiohttp.ClientResponse:
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        path = "/v1/chat/completions"
        if style == "anthropic":
            path = "/v1/messages"
            headers["anthropic-version"] = "2023-06-01"
            if self._upstream_key:
                headers["x-api-key"] = self._upstream_key
        elif self._upstream_key:
            headers["Authorization"] = f"Bearer {self._upstream_key}"
        return await self._session.post(
            f"{self.config.upstream.rstrip('/')}{path}", data=orjson.dumps(upstream), headers=headers
        )

    def _publish_estimate(self, event: UsageEventV1) -> None:
        """Running estimates of a stream go out as they come; the final event is settled."""
        if not event.data.final:
            self.publisher.publish(event)
            self.stats.estimates += 1

    async def _settle(self, call: _Call, event: UsageEventV1) -> tuple[int, str]:
        """Publish the final event, replace the budget reservation by the priced cost, correct the token buckets.

        Returns the call's cost in nano-USD and its price version.
        """
        self.publisher.publish(event)
        metrics.EVENTS.labels("gateway", "published").inc()
        cost = price(event.data, event.time, self.table)
        self.guard.complete(call.ticket, cost.total_nanos, event.time, time.monotonic())
        self.stats.cost_nanos += cost.total_nanos
        if self.stats.keep_events:
            self.stats.events.append(event)
        used = {
            "requests": 1,
            "input_tokens": event.data.input_tokens,
            "output_tokens": event.data.output_tokens,
            "tokens": event.data.input_tokens + event.data.output_tokens,
        }
        await self.limits.finish(call.limits, [(c, used[c.kind]) for c in call.limits.charges], call.limit_ticket)
        if self.shared is not None:
            event_us = (event.time - _EPOCH) // timedelta(microseconds=1)
            await self.shared.settle(call.decision, call.limit_ticket, cost.total_nanos, event_us)
        return cost.total_nanos, cost.price_version

    async def _unary(self, upstream: dict[str, Any], call: _Call) -> web.StreamResponse:
        try:
            async with await self._post(upstream, call.style) as up:
                raw = await up.read()
                status = up.status
        except aiohttp.ClientError as exc:
            await self._upstream_failed(call)
            return _error(call.style, 502, f"upstream unreachable: {exc}")
        if status != 200:
            await self._upstream_failed(call)  # the upstream refused: nothing to bill
            return web.Response(status=status, body=raw, content_type="application/json")
        doc = orjson.loads(raw)
        usage = (
            anthropic_usage(doc.get("usage") or {})
            if call.style == "anthropic"
            else openai_usage(doc.get("usage") or {})
        )
        event = EventFactory().make(
            call.who,
            provider=provider_for(call.decision.model),
            model=call.decision.model,
            request_id=call.rid,
            usage=usage,
            at=call.now,
        )
        cost, version = await self._settle(call, event)
        headers = {**call.headers, "X-Tokenledger-Cost-Nanos": str(cost), "X-Tokenledger-Price-Version": version}
        return web.Response(body=raw, content_type="application/json", headers=headers)

    def _tracker(self, call: _Call) -> StreamTracker:
        kind = AnthropicStreamTracker if call.style == "anthropic" else OpenAIStreamTracker
        kwargs: dict[str, Any] = {
            "model": call.decision.model,
            "request_id": call.rid,
            "who": call.who,
            "emit": self._publish_estimate,
            "prompt_messages": call.messages,
            "factory": EventFactory(clock=lambda: call.now),
        }
        if call.style == "openai":
            kwargs["provider"] = provider_for(call.decision.model)
        return kind(**kwargs)

    async def _open_stream(
        self, request: web.Request, upstream: dict[str, Any], call: _Call
    ) -> tuple[aiohttp.ClientResponse, web.StreamResponse] | web.Response:
        try:
            up = await self._post(upstream, call.style)
        except aiohttp.ClientError as exc:
            await self._upstream_failed(call)
            return _error(call.style, 502, f"upstream unreachable: {exc}")
        if up.status != 200:
            body = await up.read()
            up.release()
            await self._upstream_failed(call)
            return web.Response(status=up.status, body=body, content_type="application/json")
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **call.headers}
        )
        await resp.prepare(request)
        return up, resp

    async def _stream(
        self, request: web.Request, upstream: dict[str, Any], call: _Call, *, wants_usage: bool
    ) -> web.StreamResponse:
        tracker = self._tracker(call)
        opened = await self._open_stream(request, upstream, call)
        if isinstance(opened, web.Response):
            return opened
        up, resp = opened
        settled = False
        async with up:
            try:
                async for line in up.content:
                    if not line.startswith(b"data: "):
                        continue
                    payload = line[6:].strip()
                    if payload != b"[DONE]":
                        chunk = orjson.loads(payload)
                        tracker.on_chunk(chunk)  # type: ignore[attr-defined]
                        if chunk.get("usage") is not None and not wants_usage:
                            continue
                    elif not settled:
                        settled = True
                        await resp.write(
                            _cost_comment(*await self._settle(call, tracker.final or tracker.finish(None)))
                        )
                    await resp.write(b"data: " + payload + b"\n\n")
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                self.stats.aborted_streams += 1
            finally:
                if not settled:  # provider figures when the usage chunk arrived; else the exact estimate so far
                    await self._settle(call, tracker.final or tracker.finish(None))
        return resp

    async def _stream_messages(self, request: web.Request, upstream: dict[str, Any], call: _Call) -> web.StreamResponse:
        tracker = self._tracker(call)
        opened = await self._open_stream(request, upstream, call)
        if isinstance(opened, web.Response):
            return opened
        up, resp = opened
        settled: tuple[int, str] | None = None
        async with up:
            try:
                event_name = b""
                async for line in up.content:
                    if line.startswith(b"event: "):
                        event_name = line[7:].strip()
                    elif line.startswith(b"data: "):
                        tracker.on_event(orjson.loads(line[6:]))  # type: ignore[attr-defined]
                        if event_name == b"message_stop" and settled is None:
                            settled = await self._settle(call, tracker.final or tracker.finish(None))
                    await resp.write(line)
                if settled is not None:
                    await resp.write(_cost_comment(*settled))  # after the last event, which it must not split
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                self.stats.aborted_streams += 1
            finally:
                if settled is None:
                    await self._settle(call, tracker.final or tracker.finish(None))
        return resp


_LIVE_KEYS: dict[int, tuple[ApiKey, GatewayKey]] = {}


def _gateway_key(key: ApiKey) -> GatewayKey:
    """A control-plane gateway key as the gateway uses it (memoised per record)."""
    found = _LIVE_KEYS.get(id(key))
    if found is None or found[0] is not key:
        if len(_LIVE_KEYS) >= 100_000:
            _LIVE_KEYS.clear()
        gk = GatewayKey(
            name=key.id,  # the api_key label: the id (a name may be any text)
            key_sha256=key.sha256,
            tenant=key.tenant,
            department=key.department,
            project=key.project,
            environment=key.environment,
            features=key.features,
            exempt_features=key.exempt_features,
            user_from=key.user_from,
            user=key.user,
            user_header=key.user_header,
        )
        found = _LIVE_KEYS[id(key)] = (key, gk)
    return found[1]


def _cost_comment(cost: int, version: str) -> bytes:
    """An SSE comment (clients skip it) with the stream's cost: headers left before the cost was known."""
    return f": tokenledger cost_nanos={cost} price_version={version}\n\n".encode()
