"""Deterministic simulated traffic for the demo, benchmarks and tests.

A tenant (``acme``) with several departments, projects, users and models; weekday/weekend
seasonality and growth; prompt-cache hits; traces whose root request (a gateway project)
fans out to retrieval and rerank services; and one runaway agent loop.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Workload:
    """One kind of traffic."""

    department: str
    project: str
    feature: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_share: float
    per_weekday: int
    users: int


WORKLOADS = (
    Workload("research", "copilot", "chat", "openai", "gpt-4o", 2400, 450, 0.35, 90, 12),
    Workload("research", "copilot", "reasoning", "openai", "o3-mini", 1300, 2200, 0.0, 30, 6),
    Workload("support", "helpdesk", "triage", "openai", "gpt-4o-mini", 900, 120, 0.10, 160, 20),
    Workload("support", "helpdesk", "classify-backlog", "openai", "gpt-4o", 700, 60, 0.0, 40, 3),
    Workload(
        "engineering",
        "code-review",
        "review",
        "anthropic",
        "claude-sonnet-4-20250514",
        6000,
        700,
        0.6,
        60,
        15,
    ),
    Workload("engineering", "code-review", "explain", "deepseek", "deepseek-chat", 1500, 600, 0.4, 50, 15),
    Workload("legal", "contracts", "summarize", "google", "gemini-2.5-pro", 90_000, 1500, 0.2, 12, 4),
    Workload("sales", "crm", "email-draft", "dashscope", "qwen-plus", 1100, 350, 0.0, 70, 10),
)
TENANT = "acme"


def _event(
    n: int, at: datetime, w: Workload, rng: random.Random, *, trace: tuple[str, str, str] | None, user: str
) -> dict[str, Any]:
    input_tokens = max(1, int(rng.gauss(w.input_tokens, w.input_tokens / 4)))
    cached = int(input_tokens * w.cache_share * rng.random() * 1.6)
    cached = min(cached, input_tokens)
    cache_write = int((input_tokens - cached) * 0.3) if w.provider == "anthropic" else 0
    output_tokens = max(1, int(rng.gauss(w.output_tokens, w.output_tokens / 3)))
    trace_id, span_id, parent = trace or ("", "", "")
    data: dict[str, Any] = {
        "provider": w.provider,
        "model": w.model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_read_tokens": cached,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": int(output_tokens * 0.7) if w.model.startswith("o3") else 0,
        "usage_source": "provider",
        "request_id": f"req-{n:08d}",
        "batch": w.feature == "summarize" and rng.random() < 0.3,
        "labels": {
            "tenant": TENANT,
            "user": user,
            "department": w.department,
            "project": w.project,
            "feature": w.feature,
            "environment": "prod" if rng.random() < 0.85 else "staging",
            "api_key": f"key-{zlib.crc32(f'{w.project}/{user}'.encode()) % 6}",
        },
    }
    if trace_id:
        data.update(trace_id=trace_id, span_id=span_id)
        if parent:
            data["parent_span_id"] = parent
    return {
        "specversion": "1.0",
        "id": f"evt-{n:08d}",
        "source": f"//svc/{w.project}",
        "type": "dev.tokenledger.usage.v1",
        "time": at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


_RETRIEVAL = Workload("platform", "retrieval", "embed-query", "openai", "gpt-4o-mini", 600, 80, 0.0, 0, 1)
_RERANK = Workload("platform", "rerank", "rerank", "deepseek", "deepseek-chat", 3000, 50, 0.5, 0, 1)
_RUNAWAY = Workload("research", "copilot", "agent-loop", "openai", "gpt-4o", 8000, 900, 0.0, 0, 1)


def simulate(start: datetime, days: int, seed: int = 7, scale: float = 1.0) -> Iterator[dict[str, Any]]:
    """Yield events from ``start`` (aware) for ``days`` days, in time order within each day.

    Volume grows 1 % a week; weekends carry 35 % of weekday traffic. One runaway agent loop
    (2,000 large gpt-4o calls in 40 minutes) happens on the fourth-last day.
    """
    rng = random.Random(seed)
    n = 0
    for day in range(days):
        day_start = start + timedelta(days=day)
        weekend = day_start.weekday() >= 5
        growth = 1 + 0.01 * day / 7
        batch: list[tuple[datetime, Workload, tuple[str, str, str] | None, str]] = []
        for w in WORKLOADS:
            count = round(w.per_weekday * growth * scale * (0.35 if weekend else 1.0) * rng.uniform(0.85, 1.15))
            for _ in range(count):
                at = day_start + timedelta(seconds=rng.randrange(86_400))
                user = f"{w.department[:3]}-{rng.randrange(w.users):02d}"
                if w.project == "copilot" and w.feature == "chat" and rng.random() < 0.5:
                    # A traced request: copilot (root) -> retrieval -> rerank.
                    tid = f"{rng.getrandbits(128):032x}"
                    root, child, grand = (f"{rng.getrandbits(64):016x}" for _ in range(3))
                    batch.append((at, w, (tid, root, ""), user))
                    batch.append((at + timedelta(milliseconds=300), _RETRIEVAL, (tid, child, root), "svc"))
                    batch.append((at + timedelta(milliseconds=500), _RERANK, (tid, grand, child), "svc"))
                else:
                    batch.append((at, w, None, user))
        if day == days - 4:
            loop_start = day_start + timedelta(hours=14)
            for i in range(int(2000 * scale)):
                batch.append((loop_start + timedelta(seconds=i * 1.2), _RUNAWAY, None, "res-07"))
        batch.sort(key=lambda b: b[0])
        for at, w, trace, user in batch:
            yield _event(n, at, w, rng, trace=trace, user=user)
            n += 1
