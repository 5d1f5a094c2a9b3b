"""Request identity: tenant-scoped and injective; placement stays the producers' key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from producers.ingest import binary_event, check_events
from tests.factories import event_dict
from tokenledger.identity import identity_of, is_legacy, placement_key, request_identity, split_identity
from tokenledger.schema.fastdecode import decode_usage_event

printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
# Label values: anything but control characters (the schema's rule), '|' and U+001F-adjacent text included.
label = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12)
parts = st.tuples(label, printable, printable)


@given(parts, parts)
def test_identity_is_injective(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    assert (identity_of(*a) == identity_of(*b)) == (a == b)
    assert split_identity(identity_of(*a)) == a
    assert not is_legacy(identity_of(*a))


def test_the_issue_s_ambiguous_pairs_and_two_tenants_differ() -> None:
    assert identity_of("acme", "//probe/pipe|x", "y") != identity_of("acme", "//probe/pipe", "x|y")
    assert identity_of("acme", "//probe/xt", "r-xt-1") != identity_of("globex", "//probe/xt", "r-xt-1")
    assert is_legacy("//probe/xt|r-xt-1")


def test_event_identity_and_placement() -> None:
    doc = event_dict(request_id="req-1")
    ev = decode_usage_event(orjson.dumps(doc))
    assert request_identity(ev) == identity_of("acme", doc["source"], "req-1")
    assert placement_key(ev) == f"{doc['source']}|req-1".encode()  # what producers have always sent


NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _at(when: datetime) -> dict[str, object]:
    doc = event_dict(request_id=f"w-{when.timestamp()}")
    doc["time"] = when.isoformat()
    return doc


def test_http_time_window() -> None:
    docs = [
        _at(datetime(2099, 1, 1, tzinfo=UTC)),
        _at(datetime(1971, 1, 1, tzinfo=UTC)),
        _at(NOW + timedelta(minutes=4, seconds=59)),
        _at(NOW + timedelta(minutes=5, seconds=1)),
        _at(NOW - timedelta(days=29, hours=23)),
        _at(NOW - timedelta(days=30, seconds=1)),
    ]
    checked = check_events(docs, "acme", NOW)
    assert [r["index"] for r in checked.rejected] == [0, 1, 3, 5]
    assert "more than 5 minutes after arrival" in checked.rejected[0]["reason"]
    assert "backfill" in checked.rejected[1]["reason"]
    assert len(checked.accepted) == 2


def test_binary_mode_attributes_from_headers() -> None:
    doc = event_dict(request_id="bin-1")
    headers = {
        "ce-specversion": "1.0",
        "CE-ID": "bin-evt-1",
        "ce-source": "%2F%2Fsvc%2Fbin",  # percent-encoded, as the binding requires for some characters
        "ce-type": doc["type"],
        "ce-time": doc["time"],
        "Content-Type": "application/json",
    }
    event = binary_event(headers, doc["data"], "application/json")
    assert event["id"] == "bin-evt-1" and event["source"] == "//svc/bin"
    ev = decode_usage_event(orjson.dumps(event))
    assert ev.data.request_id == "bin-1"


def test_hostile_values_are_refused_per_event_not_crashing() -> None:
    big = event_dict(request_id="big")
    big["data"]["input_tokens"] = 1 << 80  # JSON carries it; the schema refuses it
    checked = check_events([big, 5, None, [], {"data": {"labels": "x"}}], "acme", NOW)
    assert [r["index"] for r in checked.rejected] == [0, 1, 2, 3, 4] and not checked.accepted
