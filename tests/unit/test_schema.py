from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tests.factories import event_dict
from tokenledger.schema import LABEL_MAX_LEN, UsageEventV1


def validate(doc: dict[str, Any]) -> UsageEventV1:
    return UsageEventV1.model_validate_json(json.dumps(doc))


def test_valid_event_round_trips_with_exact_values() -> None:
    ev = validate(event_dict())
    assert ev.identity == ("acme", "//svc/chat-api", "evt-0001")
    assert ev.time == datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
    assert ev.data.input_tokens == 1200
    assert ev.data.cached_read_tokens == 200
    assert ev.data.labels.department == "research"
    again = UsageEventV1.model_validate_json(ev.model_dump_json())
    assert again == ev


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(extra_field=1), "Extra inputs are not permitted"),
        (lambda d: d["data"].update(unknown=1), "Extra inputs are not permitted"),
        (lambda d: d["data"]["labels"].update(team="x"), "Extra inputs are not permitted"),
        (lambda d: d["data"].update(input_tokens=-1), "greater than or equal to 0"),
        (lambda d: d["data"].update(output_tokens="12"), "valid integer"),
        (lambda d: d["data"].update(output_tokens=1.0), "valid integer"),
        (lambda d: d["data"]["labels"].update(user="x" * (LABEL_MAX_LEN + 1)), "at most 128"),
        (lambda d: d["data"]["labels"].update(user="a\nb"), "match pattern"),
        (lambda d: d.update(time="2026-03-10T09:30:00"), "timezone"),
        (lambda d: d.update(specversion="0.3"), "'1.0'"),
        (lambda d: d.update(type="com.other"), "dev.tokenledger.usage.v1"),
        (lambda d: d["data"].update(cached_read_tokens=1201), "exceeds input_tokens"),
        (lambda d: d["data"].update(reasoning_tokens=301), "exceeds output_tokens"),
        (lambda d: d["data"].update(usage_source="guess"), "'provider' or 'estimated'"),
        (lambda d: d["data"]["labels"].pop("tenant"), "Field required"),
        (lambda d: d.update(id=""), "at least 1"),
        (lambda d: d["data"].update(provider="Open AI"), "match pattern"),
    ],
)
def test_invalid_events_are_rejected_with_reason(mutate: Any, needle: str) -> None:
    doc = event_dict()
    mutate(doc)
    with pytest.raises(ValidationError) as info:
        validate(doc)
    assert needle in str(info.value)


def test_naive_datetime_rejected_even_from_python() -> None:
    doc = event_dict()
    doc["time"] = datetime(2026, 1, 1)
    with pytest.raises(ValidationError):
        UsageEventV1.model_validate(doc)
