"""OpenAI wire helpers: chat messages as the token counter needs them, error bodies."""

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
