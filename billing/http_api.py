"""HTTP download endpoint for finance, with per-tenant access control.

Routes (``Authorization: Bearer <token>``; a token grants exactly one tenant):

* ``GET /v1/tenants/{tenant}/bills/{YYYY-MM}/{dimension}/{value}.{json|csv|pdf}[?rating=...]``
* ``GET /v1/tenants/{tenant}/allocations/{YYYY-MM}.{json|csv}?method=hybrid&party=project``
* ``GET /v1/tenants/{tenant}/forecasts.json``
* ``GET /healthz``, ``/readyz``, ``/metrics``

Served by aiohttp (the project's one HTTP stack) on a thread of its own; the store's blocking
queries run on worker threads. Every error is JSON (``{"error": {"code", "message"}}``):
400 naming a bad month, dimension, format or query value, 401 without a known token, 403 for
another tenant's data, 404 for unknown routes and scopes without usage, 405 for other methods,
422 when a bill needs an exchange rate the configuration does not have (naming it), 500 with
the traceback in the log for anything unexpected. No request drops its connection.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus

import orjson
from aiohttp import web

from billing.admin_api import AdminApi
from billing.allocation import METHODS
from billing.bill import AS_BILLED, DIMENSIONS, build_bill
from billing.console.data import ConsoleData
from billing.console.pages import ConsolePages
from billing.console.session import COOKIE, Sessions, billing_tenant
from billing.context import BillingContext, live_fx
from billing.forecast_job import forecast_budgets
from billing.jobs import allocation_csv, allocation_for_month, file_part
from billing.model import Scope
from billing.periods import month_period
from billing.render import render_csv, render_json, render_pdf, to_plain
from tokenledger.budgets import BudgetFile
from tokenledger.control.records import ApiKey
from tokenledger.control.state import ControlState
from tokenledger.guard import BreakerView
from tokenledger.health import answer
from tokenledger.http_edge import bearer_token, error_response, json_errors
from tokenledger.store.base import Store, StoreRejected, StoreUnavailable

PARTIES = ("project", "department", "source")
_MONTH = re.compile(r"^\d{4}-(?:0[1-9]|1[0-2])$")
CONSOLE: web.AppKey[ConsoleData] = web.AppKey("console", ConsoleData)
_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


class AccessDenied(Exception):
    """Carries the HTTP status to answer with."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


def authorize(header: str | None, tenant: str, control: ControlState) -> None:
    """Check a bearer token against the live billing tokens (a revoked one is gone at once).

    Raises:
        AccessDenied: 401 when the token is missing or unknown, 403 when it is another tenant's.
    """
    token = bearer_token(header)
    found = billing_tenant(control, token) if token is not None else None
    if found is None:
        raise AccessDenied(HTTPStatus.UNAUTHORIZED)
    if found[0] != tenant:
        raise AccessDenied(HTTPStatus.FORBIDDEN)


def access_state(ctx: BillingContext) -> ControlState:
    """A control state holding the billing file's ``access`` tokens (a server without a control plane)."""
    return ControlState.from_records(
        ("key", f"access-{i}", ApiKey(id=f"access-{i}", tenant=a.tenant, kind="billing", sha256=a.token_sha256))
        for i, a in enumerate(ctx.config.access)
    )


class BadRequest(ValueError):
    """A request value the API refuses (400), named in the message."""


def _month(value: str) -> str:
    if not _MONTH.match(value):
        raise BadRequest(f"month {value!r} is not YYYY-MM (01-12)")
    return value


def _split_file(name: str, formats: tuple[str, ...]) -> tuple[str, str]:
    stem, dot, fmt = name.rpartition(".")
    if not dot or fmt not in formats:
        raise BadRequest(f"{name!r}: the format must be one of {', '.join(formats)}")
    return stem, fmt


class Routes:
    """The API's handlers over one store; blocking work runs on worker threads."""

    def __init__(self, store: Store, ctx: BillingContext, control: ControlState, sessions: Sessions) -> None:
        self.store, self.base_ctx, self.control, self.sessions = store, ctx, control, sessions

    def ctx_of(self, tenant: str) -> BillingContext:
        """The billing context in the tenant's timezone and currency, with the imported FX rates."""
        t = self.control.tenant(tenant)
        return live_fx(self.base_ctx, self.control).for_tenant(t.timezone, t.currency)

    async def _run(self, request: web.Request, work: Callable[[str], web.Response]) -> web.Response:
        tenant = request.match_info["tenant"]
        signed_in = self.sessions.tenant(request.cookies.get(COOKIE))  # the console's downloads
        try:
            if signed_in is None or "Authorization" in request.headers:
                authorize(request.headers.get("Authorization"), tenant, self.control)
            elif signed_in != tenant:
                raise AccessDenied(HTTPStatus.FORBIDDEN)
        except AccessDenied as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == HTTPStatus.UNAUTHORIZED else None
            return error_response(exc.status.value, exc.status.phrase, headers)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, work, tenant)
        except BadRequest as exc:
            return error_response(400, str(exc))
        except LookupError as exc:  # a missing exchange rate: the bill cannot be stated in its currency
            return error_response(422, str(exc))
        except (StoreUnavailable, StoreRejected) as exc:  # StoreFailed ends the process (billing.service)
            return error_response(503, f"store unavailable: {exc}", {"Retry-After": "5"})

    async def bill(self, request: web.Request) -> web.Response:
        """One bill as JSON, CSV or PDF."""
        month, dimension = request.match_info["month"], request.match_info["dimension"]
        name = request.match_info["file"]
        rating = request.query.get("rating", AS_BILLED)

        def work(tenant: str) -> web.Response:
            _month(month)
            if dimension not in DIMENSIONS:
                raise BadRequest(f"dimension {dimension!r} must be one of {', '.join(DIMENSIONS)}")
            value, fmt = _split_file(name, ("json", "csv", "pdf"))
            kind, _, run = rating.partition(":")
            if not (rating == AS_BILLED or (kind == "rerated" and run)):
                raise BadRequest(f"rating {rating!r} must be {AS_BILLED} or rerated:<run id>")
            ctx = self.ctx_of(tenant)
            bill = build_bill(
                self.store, Scope(tenant, dimension, value), month_period(month, ctx.config.tz), ctx, rating
            )
            if bill.summary.requests == 0:  # a misspelt scope must not look like a real zero bill
                return error_response(404, f"no usage of {dimension}={value} for tenant {tenant} in {month}")
            body = {"json": render_json, "csv": render_csv, "pdf": render_pdf}[fmt](bill)
            filename = f"bill-{file_part(tenant)}-{month}-{dimension}-{file_part(value)}.{fmt}"
            return _file(body, fmt, filename)

        return await self._run(request, work)

    async def allocation(self, request: web.Request) -> web.Response:
        """A month's split of traced spend."""
        method = request.query.get("method", "hybrid")
        party = request.query.get("party", "project")
        month_file = request.match_info["file"]

        def work(tenant: str) -> web.Response:
            month, fmt = _split_file(month_file, ("json", "csv"))
            _month(month)
            if method not in METHODS:
                raise BadRequest(f"method {method!r} must be one of {', '.join(METHODS)}")
            if party not in PARTIES:
                raise BadRequest(f"party {party!r} must be one of {', '.join(PARTIES)}")
            amount, split = allocation_for_month(
                self.store, self.ctx_of(tenant), tenant, month, method=method, party=party
            )
            if fmt == "csv":
                return _file(allocation_csv(amount, split, method, party), "csv")
            doc = {
                "tenant": tenant,
                "month": month,
                "method": method,
                "party": party,
                "amount_nanos": amount,
                "split_nanos": split,
            }
            return _file(orjson.dumps(doc), "json")

        return await self._run(request, work)

    async def forecast(self, request: web.Request) -> web.Response:
        """Month-end forecasts of the tenant's monthly budgets."""

        def work(tenant: str) -> web.Response:
            ctx = self.ctx_of(tenant)
            mine = BudgetFile(
                timezone=ctx.config.timezone,
                budgets=tuple(sorted(self.control.tenant_budgets(tenant).by_id.values(), key=lambda b: b.id)),
            )
            results = [to_plain(r, "USD") for r in forecast_budgets(self.store, mine, ctx)]
            return _file(orjson.dumps({"units": "nano-USD", "forecasts": results}), "json")

        return await self._run(request, work)


async def _probe(request: web.Request) -> web.Response:
    status, body, ctype = answer(request.path) or (HTTPStatus.NOT_FOUND, b"{}", "application/json")
    return web.Response(status=int(status), body=body, headers={"Content-Type": ctype})


def _file(body: bytes, fmt: str, filename: str | None = None) -> web.Response:
    headers = {"Content-Type": _TYPES[fmt], "Cache-Control": "no-store"}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return web.Response(body=body, headers=headers)


def make_app(
    store: Store,
    ctx: BillingContext,
    control: ControlState | None = None,
    admin: AdminApi | None = None,
    breakers: Callable[[], Mapping[str, BreakerView]] = dict,
) -> web.Application:
    """The billing API and console (tokens from ``control``, else from the billing file)."""
    state = control if control is not None else access_state(ctx)
    sessions = Sessions(state)
    routes = Routes(store, ctx, state, sessions)
    app = web.Application(middlewares=[json_errors])
    if admin is not None:
        admin.routes(app)
    console = ConsoleData(store, routes.ctx_of, state, breakers)
    app[CONSOLE] = console
    ConsolePages(console, sessions).routes(app)
    app.router.add_get("/v1/tenants/{tenant}/bills/{month}/{dimension}/{file}", routes.bill)
    app.router.add_get("/v1/tenants/{tenant}/allocations/{file}", routes.allocation)
    app.router.add_get("/v1/tenants/{tenant}/forecasts.json", routes.forecast)
    for path in ("/healthz", "/readyz", "/metrics"):
        app.router.add_get(path, _probe)
    return app


class BillingServer:
    """The HTTP server on a background thread with its own event loop (``port=0`` picks a free port)."""

    def __init__(
        self,
        store: Store,
        ctx: BillingContext,
        control: ControlState | None = None,
        admin: AdminApi | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        breakers: Callable[[], Mapping[str, BreakerView]] = dict,
    ) -> None:
        self._app = make_app(store, ctx, control, admin, breakers)
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        self._thread: threading.Thread | None = None
        self._bound: tuple[str, int] | None = None

    @property
    def console(self) -> ConsoleData:
        """The console's data (the rollup refresher warms it)."""
        return self._app[CONSOLE]

    @property
    def url(self) -> str:
        """Base URL."""
        assert self._bound is not None, "start() first"
        return f"http://{self._bound[0]}:{self._bound[1]}"

    def start(self) -> BillingServer:
        """Bind (errors raise here, in the caller) and serve on a daemon thread."""
        asyncio.set_event_loop(None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self._host, self._port)
        self._loop.run_until_complete(site.start())
        host, port = self._runner.addresses[0][:2]
        self._bound = (str(host), int(port))
        self._thread = threading.Thread(target=self._loop.run_forever, name="billing-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down and release the port."""
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        self._thread = None
