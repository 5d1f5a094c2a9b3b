"""Deterministic synthetic usage events for demos and tests."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

# (provider, model, typical input, typical output, cache share, department, project, feature)
_WORKLOADS = [
    ("openai", "gpt-4o", 2400, 450, 0.35, "research", "copilot", "chat"),
    ("openai", "gpt-4o-mini", 900, 200, 0.10, "support", "helpdesk", "triage"),
    ("anthropic", "claude-sonnet-4-20250514", 6000, 700, 0.60, "engineering", "code-review", "review"),
    ("google", "gemini-2.5-pro", 120_000, 1500, 0.20, "legal", "contracts", "summarize"),
    ("deepseek", "deepseek-chat", 1500, 600, 0.40, "engineering", "code-review", "explain"),
    ("dashscope", "qwen-plus", 1100, 350, 0.0, "sales", "crm", "email-draft"),
    ("openai", "o3-mini", 1300, 2200, 0.0, "research", "copilot", "reasoning"),
]


def sample_events(start: datetime, count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Yield ``count`` valid v1 usage events (as dicts) spread over a month from ``start``."""
    rng = random.Random(seed)
    for n in range(count):
        provider, model, inp, out, cache_share, dept, project, feature = rng.choice(_WORKLOADS)
        input_tokens = max(1, int(rng.gauss(inp, inp / 4)))
        cached = int(input_tokens * cache_share * rng.random())
        cache_write = int((input_tokens - cached) * 0.3) if provider == "anthropic" else 0
        output_tokens = max(1, int(rng.gauss(out, out / 3)))
        reasoning = int(output_tokens * 0.7) if model.startswith("o3") else 0
        at = start + timedelta(seconds=rng.randrange(30 * 86400))
        yield {
            "specversion": "1.0",
            "id": f"evt-{n:07d}",
            "source": f"//svc/{project}",
            "type": "dev.tokenledger.usage.v1",
            "time": at.isoformat().replace("+00:00", "Z"),
            "data": {
                "provider": provider,
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cached_read_tokens": cached,
                "cache_write_tokens": cache_write,
                "reasoning_tokens": reasoning,
                "usage_source": "provider",
                "request_id": f"req-{n:07d}",
                "batch": feature == "summarize" and rng.random() < 0.3,
                "labels": {
                    "tenant": "acme",
                    "user": f"user-{rng.randrange(40):02d}",
                    "department": dept,
                    "project": project,
                    "feature": feature,
                    "environment": "prod" if rng.random() < 0.8 else "staging",
                    "api_key": f"key-{rng.randrange(6)}",
                },
            },
        }
