"""A fixed, hand-priced month of usage for bill tests (tenant acme, department research)."""

from __future__ import annotations

import json
from typing import Any

from tests.factories import event_dict


def _ev(eid: str, time: str, dept: str = "research", feature: str = "summarize", **data: Any) -> bytes:
    doc = event_dict(**{"request_id": f"req-{eid}", "cached_read_tokens": 0, **data})
    doc["id"] = eid
    doc["time"] = time
    doc["data"]["labels"]["department"] = dept
    doc["data"]["labels"]["feature"] = feature
    return json.dumps(doc).encode()


# cost per event in nano-USD, computed by hand (tokens x USD/1M x 1000):
EVENTS = [
    # gpt-4o: 800 x 2.50 + 200 cached x 1.25 + 300 x 10 -> 5,250,000
    _ev("e1", "2026-10-03T04:00:00Z", input_tokens=1000, cached_read_tokens=200, output_tokens=300),
    # claude sonnet 4: 2000 x 3 + 6000 x 0.30 + 2000 x 3.75 + 800 x 15 -> 27,300,000
    _ev(
        "e2",
        "2026-10-05T04:00:00Z",
        provider="anthropic",
        model="claude-sonnet-4-20250514",
        input_tokens=10_000,
        cached_read_tokens=6000,
        cache_write_tokens=2000,
        output_tokens=800,
        feature="review",
    ),
    # deepseek-chat (override, V3.2): 1M x 0.28 + 1M x 0.42 -> 700,000,000
    _ev(
        "e3",
        "2026-10-10T04:00:00Z",
        provider="deepseek",
        model="deepseek-chat",
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        trace_id=None,
        span_id=None,
    ),
    # gemini-2.5-pro above the 200k tier: 200,001 x 2.50 + 1000 x 15 -> 515,002,500
    _ev(
        "e4",
        "2026-10-15T04:00:00Z",
        provider="google",
        model="gemini-2.5-pro",
        input_tokens=200_001,
        output_tokens=1000,
    ),
    # unknown model, fallback 15 / 75: 1000 x 15 + 1000 x 75 -> 90,000,000
    _ev("e5", "2026-10-20T04:00:00Z", model="mystery-9000", input_tokens=1000, output_tokens=1000),
    # 2026-10-01 00:30 in Asia/Shanghai: inside October. gpt-4o-mini: 600 x .15 + 400 x .075 + 500 x .6
    _ev(
        "e6",
        "2026-09-30T16:30:00Z",
        model="gpt-4o-mini",
        input_tokens=1000,
        cached_read_tokens=400,
        output_tokens=500,
    ),
    # 2026-11-01 00:00 in Asia/Shanghai: November, excluded.
    _ev("e7", "2026-10-31T16:00:00Z", input_tokens=1000, output_tokens=500),
    # another department: excluded from research's bill.
    _ev("e9", "2026-10-12T04:00:00Z", dept="sales", input_tokens=1000, output_tokens=500),
]
DUPLICATE = EVENTS[0]  # redelivered in a later insert: must not count twice

TOTAL_NANOS = 5_250_000 + 27_300_000 + 700_000_000 + 515_002_500 + 90_000_000 + 420_000
