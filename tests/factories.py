"""Builders of valid wire events for tests."""

from __future__ import annotations

from typing import Any

import orjson

from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import encode_priced


def event_dict(**data_overrides: Any) -> dict[str, Any]:
    """A valid v1 usage event as a JSON-ready dict; ``data`` members overridable."""
    data: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_read_tokens": 200,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "usage_source": "provider",
        "stream_seq": 0,
        "final": True,
        "batch": False,
        "request_id": "req-1",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "labels": {
            "tenant": "acme",
            "user": "u-42",
            "department": "research",
            "project": "copilot",
            "feature": "summarize",
            "environment": "prod",
            "api_key": "key-7f3a",
        },
    }
    data.update(data_overrides)
    return {
        "specversion": "1.0",
        "id": "evt-0001",
        "source": "//svc/chat-api",
        "type": "dev.tokenledger.usage.v1",
        "time": "2026-03-10T09:30:00Z",
        "subject": "acme",
        "data": data,
    }


def priced_values(n: int) -> list[bytes]:
    """``n`` priced events (request ids ``r0``..., event ids ``e0``...) as the pricing stage writes them."""
    table = LayeredPriceTable.from_path()
    out = []
    for i in range(n):
        doc = event_dict(request_id=f"r{i}")
        doc["id"] = f"e{i}"
        ev = decode_usage_event(orjson.dumps(doc))
        out.append(encode_priced(ev, price(ev.data, ev.time, table)))
    return out
