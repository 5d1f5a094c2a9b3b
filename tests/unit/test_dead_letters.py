"""What a dead letter keeps of its value: text as text, bytes as base64, never more than 64 KiB."""

from __future__ import annotations

import base64

from stream_jobs.dead_letters import KEPT_BYTES, value_fields


def test_text_is_kept_as_text() -> None:
    assert value_fields(b'{"not": json') == {"value": '{"not": json', "value_bytes": 12}
    assert value_fields("用户".encode()) == {"value": "用户", "value_bytes": 6}


def test_bytes_that_are_not_utf8_are_kept_as_base64() -> None:
    raw = b"tlpr3\n\xff\xff\xff\xff\x00\x01"
    assert value_fields(raw) == {"value_base64": base64.b64encode(raw).decode(), "value_bytes": 12}
    assert value_fields(b"abc\xff") == {"value_base64": "YWJj/w==", "value_bytes": 4}  # the last byte too


def test_a_large_value_is_cut_at_64_kib_and_a_cut_character_is_dropped_whole() -> None:
    big = b"\xff" * 900_000  # a forged 900 KB batch: ~2.7 MB as text with replacement characters
    fields = value_fields(big)
    assert len(base64.b64decode(fields["value_base64"])) == KEPT_BYTES and fields["value_bytes"] == 900_000
    text = ("a" * (KEPT_BYTES - 1) + "é" * 10).encode()  # "é" is 2 bytes: the limit cuts the first one
    assert value_fields(text) == {"value": "a" * (KEPT_BYTES - 1), "value_bytes": KEPT_BYTES + 19}
