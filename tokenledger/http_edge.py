"""What every aiohttp server of the project shares at its edge: JSON errors and bearer tokens.

* :func:`json_errors` is a middleware: any ``HTTPException`` (404, 405, 413, ...) is answered as
  ``{"error": {"code", "message"}}`` with its status and headers kept (``Allow`` on a 405); any
  other exception is logged with its traceback once and answered 500 JSON. A client never
  sees an HTML page or a dropped connection.
* :func:`bearer_token`: the token of an ``Authorization`` header. The scheme is
  case-insensitive (RFC 7235 section 2.1), so ``bearer x`` and ``BEARER x`` are ``Bearer x``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = web.AppKey("max_body_bytes", int)  # set on an app to name its limit in 413 answers


def json_response(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response."""
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """``{"error": {"code": status, "message": message}}``."""
    return json_response(status, {"error": {"code": status, "message": message}}, headers)


_KEPT = ("Allow", "Retry-After", "WWW-Authenticate")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON; unexpected ones logged with their traceback and answered 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.reason
        if exc.status == 413:
            limit = request.app.get(MAX_BODY)
            message = f"body over {limit} bytes" if limit is not None else "body too large"
        elif exc.status == 404:
            message = f"no route {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif exc.text and exc.text != f"{exc.status}: {exc.reason}":
            message = exc.text
        kept = {k: v for k, v in exc.headers.items() if k in _KEPT}
        return error_response(exc.status, message, kept)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (logged)")


def bearer_token(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (scheme in any case), or ``None``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
