"""OpenAI and Anthropic wire helpers: messages as the token counter needs them, error bodies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


def text_messages(messages: Any) -> list[dict[str, str]]:
    """``role``/``content`` string pairs; list content keeps its text parts, other parts are ignored."""
    out: list[dict[str, str]] = []
    for m in messages if isinstance(messages, list) else []:
        if not isinstance(m, dict):
            continue
        content = m.get("content", "")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        out.append({"role": str(m.get("role", "user")), "content": str(content or "")})
    return out


def openai_error(
    status: int, message: str, kind: str, code: str | None, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error response shaped like OpenAI's (``{"error": {message, type, param, code}}``)."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def anthropic_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """An Anthropic Messages body's ``system`` and ``messages`` as role/content string pairs."""
    system = body.get("system")
    if isinstance(system, list):
        system = "".join(str(p.get("text", "")) for p in system if isinstance(p, dict))
    head = [{"role": "system", "content": str(system)}] if system else []
    return head + text_messages(body.get("messages"))


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
}


def anthropic_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error response shaped like Anthropic's (``{"type": "error", "error": {type, message}}``)."""
    body = {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)
