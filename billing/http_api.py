"""HTTP download endpoint for finance, with per-tenant access control.

Routes (``Authorization: Bearer <token>``; a token grants exactly one tenant):

* ``GET /v1/tenants/{tenant}/bills/{YYYY-MM}/{dimension}/{value}.{json|csv|pdf}[?rating=...]``
* ``GET /v1/tenants/{tenant}/allocations/{YYYY-MM}.{json|csv}?method=hybrid&party=project``
* ``GET /v1/tenants/{tenant}/forecasts.json``
* ``GET /healthz``, ``/readyz``, ``/metrics``

401 without a known token, 403 for another tenant's data, 404 for unknown routes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import orjson

from billing.allocation import METHODS
from billing.bill import AS_BILLED, DIMENSIONS, build_bill
from billing.context import BillingContext
from billing.forecast_job import forecast_budgets
from billing.jobs import allocation_csv, allocation_for_month, file_part
from billing.model import Scope
from billing.periods import month_period
from billing.render import render_csv, render_json, render_pdf, to_plain
from tokenledger.budgets import BudgetFile
from tokenledger.health import answer
from tokenledger.store.base import Store

_MONTH = r"(\d{4}-(?:0[1-9]|1[0-2]))"
_BILL = re.compile(rf"^/v1/tenants/([^/]+)/bills/{_MONTH}/([a-z_]+)/([^/]+)\.(json|csv|pdf)$")
_ALLOC = re.compile(rf"^/v1/tenants/([^/]+)/allocations/{_MONTH}\.(json|csv)$")
_FORECAST = re.compile(r"^/v1/tenants/([^/]+)/forecasts\.json$")
_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


class AccessDenied(Exception):
    """Carries the HTTP status to answer with."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


def authorize(header: str | None, tenant: str, ctx: BillingContext) -> None:
    """Check a bearer token against the configured per-tenant digests.

    Raises:
        AccessDenied: 401 when the token is missing or unknown, 403 when it is another tenant's.
    """
    if not header or not header.startswith("Bearer "):
        raise AccessDenied(HTTPStatus.UNAUTHORIZED)
    digest = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).hexdigest()
    granted = [a.tenant for a in ctx.config.access if hmac.compare_digest(a.token_sha256, digest)]
    if not granted:
        raise AccessDenied(HTTPStatus.UNAUTHORIZED)
    if tenant not in granted:
        raise AccessDenied(HTTPStatus.FORBIDDEN)


def make_handler(store: Store, ctx: BillingContext, budgets: BudgetFile) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to the store and configuration."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "tokenledger-billing"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: HTTPStatus, body: bytes, ctype: str, filename: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if filename:
                self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, orjson.dumps({"error": {"code": status.value, "message": message}}), _TYPES["json"])

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                probe = answer(url.path)  # /healthz, /readyz, /metrics
                if probe is not None:
                    self._send(*probe)
                    return
                for pattern, route in (
                    (_BILL, self._bill),
                    (_ALLOC, self._allocation),
                    (_FORECAST, self._forecast),
                ):
                    m = pattern.match(url.path)
                    if m:
                        tenant = unquote(m.group(1))
                        authorize(self.headers.get("Authorization"), tenant, ctx)
                        route(tenant, [unquote(g) for g in m.groups()[1:]], query)
                        return
                self._error(HTTPStatus.NOT_FOUND, "no such resource")
            except AccessDenied as exc:
                self._error(exc.status, exc.status.phrase)
            except ValueError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))

        def _bill(self, tenant: str, parts: list[str], query: dict[str, str]) -> None:
            month, dimension, value, fmt = parts
            if dimension not in DIMENSIONS:
                raise ValueError(f"dimension must be one of {DIMENSIONS}")
            bill = build_bill(
                store,
                Scope(tenant, dimension, value),
                month_period(month, ctx.config.tz),
                ctx,
                query.get("rating", AS_BILLED),
            )
            if bill.summary.requests == 0:  # a misspelt scope must not look like a real zero bill
                self._error(HTTPStatus.NOT_FOUND, f"no usage of {dimension}={value} for tenant {tenant} in {month}")
                return
            body = {"json": render_json, "csv": render_csv, "pdf": render_pdf}[fmt](bill)
            name = f"bill-{file_part(tenant)}-{month}-{dimension}-{file_part(value)}.{fmt}"
            self._send(HTTPStatus.OK, body, _TYPES[fmt], name)

        def _allocation(self, tenant: str, parts: list[str], query: dict[str, str]) -> None:
            month, fmt = parts
            method = query.get("method", "hybrid")
            party = query.get("party", "project")
            if method not in METHODS:
                raise ValueError(f"method must be one of {METHODS}")
            amount, split = allocation_for_month(store, ctx, tenant, month, method=method, party=party)
            if fmt == "csv":
                self._send(HTTPStatus.OK, allocation_csv(amount, split, method, party), _TYPES["csv"])
            else:
                doc = {
                    "tenant": tenant,
                    "month": month,
                    "method": method,
                    "party": party,
                    "amount_nanos": amount,
                    "split_nanos": split,
                }
                self._send(HTTPStatus.OK, orjson.dumps(doc), _TYPES["json"])

        def _forecast(self, tenant: str, parts: list[str], query: dict[str, str]) -> None:
            mine = BudgetFile(
                timezone=budgets.timezone, budgets=tuple(b for b in budgets.budgets if b.tenant == tenant)
            )
            results = [to_plain(r, "USD") for r in forecast_budgets(store, mine, ctx)]
            self._send(HTTPStatus.OK, orjson.dumps({"units": "nano-USD", "forecasts": results}), _TYPES["json"])

    return Handler


class BillingServer:
    """The HTTP server on a background thread (``port=0`` picks a free port)."""

    def __init__(
        self, store: Store, ctx: BillingContext, budgets: BudgetFile, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._httpd = ThreadingHTTPServer((host, port), make_handler(store, ctx, budgets))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> BillingServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
