"""Rate-limit headers as clients already parse them: OpenAI's ``x-ratelimit-*``, Anthropic's ``anthropic-ratelimit-*``.

Each quantity reports its most constrained bucket (the least remaining) among the limits the
request matched. OpenAI's reset is a duration (``"1s"``, ``"6m0s"``, ``"250ms"``): until the bucket
is full again; Anthropic's is the RFC 3339 instant it will be. ``Retry-After`` (whole seconds,
rounded up) and OpenAI's ``retry-after-ms`` go on every 429.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from tokenledger.ratelimit import BucketState, Verdict

_OPENAI = {"requests": "requests", "tokens": "tokens"}
_ANTHROPIC = {
    "requests": "requests",
    "tokens": "tokens",
    "input_tokens": "input-tokens",
    "output_tokens": "output-tokens",
}


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: ``250ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes >= 1:
        return f"{int(minutes)}m{text}"
    return text


def tightest(states: tuple[BucketState, ...]) -> dict[str, BucketState]:
    """The least-remaining bucket of each quantity."""
    found: dict[str, BucketState] = {}
    for s in states:
        kind = s.charge.kind
        if kind not in found or s.remaining < found[kind].remaining:
            found[kind] = s
    return found


def openai_headers(verdict: Verdict) -> dict[str, str]:
    """``x-ratelimit-limit|remaining|reset-requests|tokens`` (and the retry headers of a refusal)."""
    out: dict[str, str] = {}
    for kind, s in tightest(verdict.states).items():
        name = _OPENAI.get(kind)
        if name is None:
            continue
        out[f"x-ratelimit-limit-{name}"] = str(s.charge.limit)
        out[f"x-ratelimit-remaining-{name}"] = str(s.remaining)
        out[f"x-ratelimit-reset-{name}"] = openai_duration(s.reset_s)
    out.update(retry_headers(verdict))
    return out


def anthropic_headers(verdict: Verdict, now: datetime) -> dict[str, str]:
    """``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``."""
    out: dict[str, str] = {}
    for kind, s in tightest(verdict.states).items():
        name = _ANTHROPIC[kind]
        reset = (now + timedelta(seconds=s.reset_s)).astimezone().isoformat(timespec="seconds")
        out[f"anthropic-ratelimit-{name}-limit"] = str(s.charge.limit)
        out[f"anthropic-ratelimit-{name}-remaining"] = str(s.remaining)
        out[f"anthropic-ratelimit-{name}-reset"] = reset.replace("+00:00", "Z")
    out.update(retry_headers(verdict))
    return out


def retry_headers(verdict: Verdict) -> dict[str, str]:
    """``Retry-After`` (seconds, rounded up, at least 1) and ``retry-after-ms`` for a refusal."""
    if verdict.admitted:
        return {}
    wait = verdict.retry_after_s
    return {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
