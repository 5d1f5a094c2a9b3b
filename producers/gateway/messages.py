"""OpenAI chat request messages as the token counter needs them."""

from __future__ import annotations

from typing import Any


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
