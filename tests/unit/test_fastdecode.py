"""The msgspec fast path must agree with the pydantic model: same verdict, same values."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.factories import event_dict
from tokenledger.schema import UsageEventV1
from tokenledger.schema.fastdecode import InvalidEvent, decode_usage_event, encode_usage_event
from tokenledger.schema.priced import decode_priced


def pydantic_verdict(raw: bytes) -> UsageEventV1 | None:
    try:
        return UsageEventV1.model_validate_json(raw)
    except ValidationError:
        return None


def fast_verdict(raw: bytes) -> Any:
    try:
        return decode_usage_event(raw)
    except InvalidEvent:
        return None


def assert_agree(raw: bytes) -> None:
    slow, fast = pydantic_verdict(raw), fast_verdict(raw)
    assert (slow is None) == (fast is None), raw
    if slow is not None:
        assert fast.identity == slow.identity
        assert fast.time == slow.time
        assert json.loads(encode_usage_event(slow)) == json.loads(
            UsageEventV1.model_validate_json(encode_usage_event(fast)).model_dump_json(exclude_none=True)
        )


def test_fast_decode_values() -> None:
    ev = decode_usage_event(json.dumps(event_dict()).encode())
    assert ev.identity == ("acme", "//svc/chat-api", "evt-0001")
    assert ev.data.input_tokens == 1200
    assert ev.data.labels.api_key == "key-7f3a"


def test_rejection_carries_pydantic_reason() -> None:
    doc = event_dict(input_tokens=-5)
    with pytest.raises(InvalidEvent) as info:
        decode_usage_event(json.dumps(doc).encode())
    assert info.value.reason == "data.input_tokens: Input should be greater than or equal to 0"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b'{"specversion": "1.0"}',
        json.dumps(event_dict(model="gpt-4o\n")).encode(),
        json.dumps(event_dict(request_id="r\n")).encode(),
        json.dumps(event_dict(final=1)).encode(),
        json.dumps(event_dict(input_tokens=True)).encode(),
        json.dumps(event_dict(input_tokens=10**12)).encode(),
        json.dumps(event_dict(cached_read_tokens=1000, cache_write_tokens=201)).encode(),
        json.dumps(event_dict(trace_id=None)).encode(),
        json.dumps({**event_dict(), "time": "2026-03-10T09:30:00+08:00"}).encode(),
        json.dumps({**event_dict(), "time": "2026-03-10 09:30:00Z"}).encode(),
        json.dumps({**event_dict(), "time": "2026-03-10T09:30:00.123456Z"}).encode(),
        json.dumps({**event_dict(), "time": 1773135000}).encode(),
        json.dumps({**event_dict(), "subject": None}).encode(),
    ],
)
def test_edge_cases_agree(raw: bytes) -> None:
    assert_agree(raw)


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["", "ok", "a\n", "x" * 129, "Zürich", "部门"]
)
_ints = st.integers(min_value=-3, max_value=2_000) | st.sampled_from([10**9, 10**9 + 1])
_values = st.none() | st.booleans() | _ints | _text | st.floats(allow_nan=False, max_value=1e6)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    doc = event_dict()
    for _ in range(draw(st.integers(0, 3))):
        containers = [doc]
        if isinstance(doc.get("data"), dict):
            containers.append(doc["data"])
            if isinstance(doc["data"].get("labels"), dict):
                containers.append(doc["data"]["labels"])
        obj = draw(st.sampled_from(containers))
        key = draw(st.sampled_from([*obj.keys(), "unexpected"]))
        if draw(st.booleans()) and key in obj:
            obj.pop(key)
        else:
            obj[key] = draw(_values)
    return json.dumps(doc).encode()


@settings(max_examples=600, deadline=None)
@given(mutated_events())
def test_random_mutations_agree(raw: bytes) -> None:
    assert_agree(raw)


def test_invalid_utf8_is_a_reason_not_a_crash() -> None:
    """msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string; both decoders turn it into a refusal."""
    raw = b'{"specversion": "1.0", "id": "\xff\xfe\xfd"}'
    with pytest.raises(InvalidEvent, match="invalid unicode"):
        decode_usage_event(raw)
    with pytest.raises(msgspec.DecodeError, match="invalid UTF-8"):
        decode_priced(b'{"type": "\xff"}')


def test_string_checks_equal_the_patterns_for_every_character() -> None:
    """The str-method checks accept exactly the characters (and so strings) the v1 patterns accept."""
    from tokenledger.schema import fastdecode as fd  # noqa: PLC0415  (private helpers under test)

    chars = [chr(c) for c in (*range(0x3000), *range(0xD7F0, 0xD800), *range(0xE000, 0xE100), 0xFEFF, 0x10FFFF)]
    for c in chars:
        for s in (c, f"a{c}", f"{c}b"):
            assert fd._printable(s) == (fd._PRINTABLE.search(s) is not None), repr(s)
            assert fd._label_ok(s) == (fd._LABEL.search(s) is not None), repr(s)
            assert fd._trace_ok(s) == (fd._TRACE.search(s) is not None), repr(s)
