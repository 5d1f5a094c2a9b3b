"""The admin HTTP API: tenants, budgets and keys as live data (``/v1/admin/...``, JSON).

Authenticated by an admin token (its sha256 in ``billing.yaml`` ``admins`` or
``TOKENLEDGER_ADMIN_TOKEN_SHA256``); a tenant's billing or ingest key gets 403, no token 401.
Every change is one control-topic transaction with its audit record
(:class:`tokenledger.control.log.ControlWriter`, actor = the admin token's name) and answers once
the service's own reader applied it, so a GET right after a PUT sees it. Validation errors
answer 400 naming the field, unknown ids 404, a change of a budget's tenant, scope or period 409
(spend counted under one scope cannot be moved to another: create a new budget).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from billing.opening import opening_for
from tokenledger.control.log import ControlLog, ControlUnavailable, ControlWriter
from tokenledger.control.records import ApiKey, ControlBudget, RateLimit, Tenant, to_doc
from tokenledger.http_edge import bearer_token, error_response, json_response
from tokenledger.store.base import Store, StoreRejected, StoreUnavailable

_FIXED = ("tenant", "scope", "period")
_GATEWAY_FIELDS = {
    "department",
    "project",
    "environment",
    "features",
    "exempt_features",
    "user_from",
    "user",
    "user_header",
}


class Refused(Exception):
    """An answer other than 2xx: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def validation_message(exc: ValidationError) -> str:
    """``field: problem`` of the first error (and how many there are)."""
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "(body)"
    more = f" ({exc.error_count()} problems)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


class AdminApi:
    """Handlers over one control log, its writer and the store (for new budgets' opening spend)."""

    def __init__(
        self,
        control: ControlLog,
        writer: ControlWriter,
        store: Store,
        admins: Mapping[str, str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.control, self.writer, self.store, self.clock = control, writer, store, clock
        self.admins = dict(admins)  # sha256 hex -> name (the audit's actor)

    def routes(self, app: web.Application) -> None:
        """Register the admin routes."""
        r = app.router
        r.add_get("/v1/admin/tenants", self.list_tenants)
        r.add_put("/v1/admin/tenants/{id}", self.put_tenant)
        r.add_get("/v1/admin/budgets", self.list_budgets)
        r.add_put("/v1/admin/budgets/{id}", self.put_budget)
        r.add_delete("/v1/admin/budgets/{id}", self.delete_budget)
        r.add_get("/v1/admin/limits", self.list_limits)
        r.add_put("/v1/admin/limits/{id}", self.put_limit)
        r.add_delete("/v1/admin/limits/{id}", self.delete_limit)
        r.add_get("/v1/admin/keys", self.list_keys)
        r.add_post("/v1/admin/keys", self.create_key)
        r.add_delete("/v1/admin/keys/{id}", self.delete_key)

    # Plumbing.

    def _actor(self, request: web.Request) -> str:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise Refused(401, "an admin token is required (Authorization: Bearer ...)")
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, name in self.admins.items():
            if hmac.compare_digest(known, digest):
                return name
        state = self.control.state
        if state.key_for(digest, "billing") is not None or state.key_for(digest, "ingest") is not None:
            raise Refused(403, "a tenant's key cannot administer the control plane")
        raise Refused(401, "unknown admin token")

    async def _handle(self, request: web.Request, work: Callable[[str], web.Response]) -> web.Response:
        try:
            actor = self._actor(request)
            return await asyncio.get_running_loop().run_in_executor(None, work, actor)
        except Refused as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return error_response(exc.status, str(exc), headers)
        except ControlUnavailable as exc:
            return error_response(503, str(exc), {"Retry-After": "5"})
        except (StoreUnavailable, StoreRejected) as exc:
            return error_response(503, f"store unavailable: {exc}", {"Retry-After": "5"})

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(400, f"body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise Refused(400, "body must be a JSON object")
        return doc

    def _validated(self, model: type[BaseModel], doc: dict[str, Any]) -> Any:
        try:
            return model.model_validate(doc)
        except ValidationError as exc:
            raise Refused(400, validation_message(exc)) from exc

    def _write(self, changes: list[tuple[str, str, BaseModel | None]], actor: str, action: str) -> None:
        self.writer.write(changes, actor=actor, action=action)

    async def _put(self, request: web.Request, kind: str, model: type[BaseModel]) -> web.Response:
        """Create (201) or replace (200) the record of ``kind`` named by the URL."""
        rid = request.match_info["id"]
        try:
            body = await self._body(request)
        except Refused as exc:
            return error_response(exc.status, str(exc))

        def work(actor: str) -> web.Response:
            record = self._validated(model, {**body, "id": body.get("id", rid)})
            if record.id != rid:
                raise Refused(400, f"id: {record.id!r} differs from the URL's {rid!r}")
            created = rid not in self.control.state.table(kind)
            self._write([(kind, rid, record)], actor, "create" if created else "update")
            return json_response(201 if created else 200, to_doc(record))

        return await self._handle(request, work)

    async def _list(
        self, request: web.Request, kind: str, name: str, doc: Callable[[Any], dict[str, Any]] = to_doc
    ) -> web.Response:
        """Every record of ``kind`` in id order, or one tenant's (``?tenant=``), under ``name``."""
        tenant = request.query.get("tenant")

        def work(_actor: str) -> web.Response:
            found = sorted(self.control.state.table(kind).values(), key=lambda r: r.id)
            return json_response(200, {name: [doc(r) for r in found if tenant in (None, r.tenant)]})

        return await self._handle(request, work)

    async def _delete(self, request: web.Request, kind: str) -> web.Response:
        """Delete the record of ``kind`` named by the URL (404 if there is none)."""
        rid = request.match_info["id"]

        def work(actor: str) -> web.Response:
            if rid not in self.control.state.table(kind):
                raise Refused(404, f"no {kind} {rid!r}")
            self._write([(kind, rid, None)], actor, "delete")
            return json_response(200, {"deleted": rid})

        return await self._handle(request, work)

    # Tenants.

    async def list_tenants(self, request: web.Request) -> web.Response:
        """Every tenant record."""

        def work(_actor: str) -> web.Response:
            tenants = [to_doc(t) for _, t in sorted(self.control.state.tenants.items())]
            return json_response(200, {"tenants": tenants, "defaults": to_doc(self.control.state.defaults)})

        return await self._handle(request, work)

    async def put_tenant(self, request: web.Request) -> web.Response:
        """Create or replace a tenant (timezone, currency, display name)."""
        return await self._put(request, "tenant", Tenant)

    # Budgets.

    async def list_budgets(self, request: web.Request) -> web.Response:
        """Every budget, or one tenant's (``?tenant=``)."""
        return await self._list(request, "budget", "budgets", _budget_doc)

    async def put_budget(self, request: web.Request) -> web.Response:
        """Create a budget (counting its period's spend so far) or change one (limit, levels, enforcement)."""
        rid = request.match_info["id"]
        try:
            body = await self._body(request)
        except Refused as exc:
            return error_response(exc.status, str(exc))

        def work(actor: str) -> web.Response:
            for computed in ("counts_from", "opening"):
                if computed in body:
                    raise Refused(400, f"{computed}: set by the control plane, not by a client")
            budget: ControlBudget = self._validated(ControlBudget, {**body, "id": body.get("id", rid)})
            if budget.id != rid:
                raise Refused(400, f"id: {budget.id!r} differs from the URL's {rid!r}")
            before = self.control.state.budgets.get(rid)
            if before is None:
                now = self.clock()
                budget = opening_for(self.store, budget, self.control.state.zone(budget.tenant), now)
            else:
                for f in _FIXED:
                    if getattr(before, f) != getattr(budget, f):
                        raise Refused(409, f"{f}: a budget's {f} is fixed; delete it and create a new budget")
                budget = budget.model_copy(update={"counts_from": before.counts_from, "opening": before.opening})
            self._write([("budget", rid, budget)], actor, "create" if before is None else "update")
            return json_response(201 if before is None else 200, _budget_doc(budget))

        return await self._handle(request, work)

    async def delete_budget(self, request: web.Request) -> web.Response:
        """Delete a budget: its breaker is withdrawn (gateways forget it)."""
        return await self._delete(request, "budget")

    # Rate limits (enforced by gateways, live).

    async def list_limits(self, request: web.Request) -> web.Response:
        """Every rate limit, or one tenant's (``?tenant=``)."""
        return await self._list(request, "limit", "limits")

    async def put_limit(self, request: web.Request) -> web.Response:
        """Create or replace a rate limit; every gateway applies it from its next request."""
        return await self._put(request, "limit", RateLimit)

    async def delete_limit(self, request: web.Request) -> web.Response:
        """Delete a rate limit."""
        return await self._delete(request, "limit")

    # Keys.

    async def list_keys(self, request: web.Request) -> web.Response:
        """Every key (never a secret; ``?tenant=`` for one tenant's)."""
        return await self._list(request, "key", "keys", _key_doc)

    async def create_key(self, request: web.Request) -> web.Response:
        """Issue an ingest key, a billing token or a gateway key (with its attribution and grant); the secret once."""
        try:
            body = await self._body(request)
        except Refused as exc:
            return error_response(exc.status, str(exc))

        def work(actor: str) -> web.Response:
            allowed = {"tenant", "kind", "name"} | (_GATEWAY_FIELDS if body.get("kind") == "gateway" else set())
            unknown = sorted(set(body) - allowed)
            if unknown:
                raise Refused(
                    400, f"{unknown[0]}: not a field of a {body.get('kind', 'key')} key ({', '.join(sorted(allowed))})"
                )
            kind = body.get("kind")
            prefix = {"ingest": "ti", "billing": "tb", "gateway": "sk-tl"}.get(kind) if isinstance(kind, str) else None
            secret = f"{prefix or 'tk'}_{secrets.token_urlsafe(32)}"
            rid = f"key-{secrets.token_hex(8)}"
            key: ApiKey = self._validated(
                ApiKey,
                {
                    **body,
                    "id": rid,
                    "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                    "created_at": self.clock().isoformat(),
                },
            )
            self._write([("key", rid, key)], actor, "create")
            return json_response(201, {**_key_doc(key), "secret": secret})

        return await self._handle(request, work)

    async def delete_key(self, request: web.Request) -> web.Response:
        """Revoke a key: it answers 401 from then on, in every process."""
        return await self._delete(request, "key")


def _budget_doc(budget: ControlBudget) -> dict[str, Any]:
    doc = to_doc(budget)
    doc["opening_nanos"] = sum(n for _, n in budget.opening)
    doc.pop("opening", None)
    return doc


def _key_doc(key: ApiKey) -> dict[str, Any]:
    doc = to_doc(key)
    doc.pop("sha256", None)
    return doc
