"""Two-phase aggregation through crashes: every key's sum is exact, whatever is replayed.

A model of both stages with the real pure parts (``DeltaBatch``, ``fresh_entries``): the
pricing stage cuts each raw partition into batches at random and may crash after sending a
batch's deltas but before remembering it, then replays from its last durable batch with other
boundaries; the spend stage may lose any subset of a batch's record writes and replay that
batch. Deltas of one key arrive in the order they were sent. Each key's total must equal the
sum of its events, counted once.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_jobs.delta_batch import DeltaBatch, fresh_entries
from stream_jobs.spend_state import labels_of_event
from tests.factories import event_dict
from tokenledger.control.files import DEFAULT_CONTROL, ControlFile
from tokenledger.control.state import ControlState
from tokenledger.schema.deltas import decode_deltas
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.raw_batch import partition_for, position

USERS = ["u0", "u1", "u2"]


def labels(user: str) -> dict[str, str]:
    return {
        "tenant": "acme",
        "user": user,
        "department": "",
        "project": "",
        "feature": "",
        "environment": "",
        "api_key": "",
        "model": "gpt-4o",
    }


events_st = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 10**9), st.integers(1, 4)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events_st, st.integers(0, 2**32))
def test_sums_exact_through_pricing_and_spend_replays(events: list[tuple[int, int, int, int]], seed: int) -> None:
    rnd = random.Random(seed)  # batch boundaries, crash points, lost records
    # Raw messages: (partition, user, nanos, events in the message); positions offset*65536+index.
    raw: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    truth: dict[str, int] = defaultdict(int)
    for partition, who, nanos, size in events:
        offset = len({pos // 65_536 for pos, _, _ in raw[partition]})
        for index in range(size):
            raw[partition].append((position(offset, index), USERS[who], nanos + index))
            truth[f"acme|user={USERS[who]}"] += nanos + index
            truth["acme|tenant=acme"] += nanos + index
            truth["acme|model=gpt-4o"] += nanos + index
    sent: list[bytes] = []  # the deltas topic, in send order
    for partition, stream in raw.items():
        done = 0  # events covered by a durable identity record (the committed point)
        while done < len(stream):
            end = min(len(stream), done + rnd.randint(1, 6))
            batch = DeltaBatch(ControlState())
            for pos, user, nanos in stream[done:end]:
                batch.add(partition, pos, 0, nanos, labels(user))
            sent.extend(value for _, value in batch.partition_messages(3, max_entries=rnd.randint(1, 4)))
            if rnd.random() < 0.3:
                continue  # crashed before the identity record: replay from `done`
            done = end
    # The spend stage, with lost record writes replayed.
    state: dict[str, tuple[int, dict[str, int]]] = {}
    i = 0
    while i < len(sent):
        chunk = sent[i : i + rnd.randint(1, 5)]
        before = dict(state)
        for value in chunk:
            for delta in decode_deltas(value):
                total, applied = state.get(delta.key, (0, {}))
                fresh, last = fresh_entries(applied, delta.entries)
                state[delta.key] = (total + sum(e[3] for e in fresh), {**applied, **last})
        if rnd.random() < 0.3:  # crash: some of the chunk's records never became durable
            for key in list(state):
                if state[key] != before.get(key) and rnd.random() < 0.5:
                    if key in before:
                        state[key] = before[key]
                    else:
                        del state[key]
            continue  # the chunk is replayed
        i += len(chunk)
    assert {k: v[0] for k, v in state.items()} == dict(truth)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["research", "legal", None]),
            st.sampled_from(["copilot", "agents", None]),
            st.sampled_from(["prod", "staging", None]),
            st.sampled_from(["key-0", "key-1", None]),
            st.sampled_from(["u1", "u2", None]),
            st.sampled_from(["gpt-4o", "o3-mini"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_deltas_of_decoded_events_equal_those_of_their_labels(
    rows: list[tuple[str | None, str | None, str | None, str | None, str | None, str]],
) -> None:
    """``add_event`` (keys memoised per labels and model) sends what ``add`` sends for the event's labels."""
    control = ControlState.from_records(ControlFile.load(DEFAULT_CONTROL).records())
    by_event, by_labels = DeltaBatch(control), DeltaBatch(control)
    for i, (dept, project, env, key, user, model) in enumerate(rows):
        doc = event_dict(model=model)
        lb = {"department": dept, "project": project, "environment": env, "api_key": key, "user": user}
        doc["data"]["labels"] = {"tenant": "acme", **{k: v for k, v in lb.items() if v is not None}}
        ev = decode_usage_event(json.dumps(doc).encode())
        by_event.add_event(0, i, 1_000 + i, 7 * i, ev)
        by_labels.add(0, i, 1_000 + i, 7 * i, labels_of_event(ev))
    assert by_event.partition_messages(3) == by_labels.partition_messages(3)


def test_partition_messages_hold_each_key_on_its_own_partition_in_order() -> None:
    """v2 messages: one partition's keys per message; a key's entries in order, never over the size."""
    batch = DeltaBatch(ControlState())
    for pos in range(40):
        batch.add(pos % 3, pos, 0, 1_000 + pos, labels(f"u{pos % 7}"))
    whole = {d.key: d.entries for _, value in batch.partition_messages(3) for d in decode_deltas(value)}
    got: dict[str, list[tuple[int, int, int, int]]] = {}
    for partition, value in batch.partition_messages(3, max_entries=10):
        deltas = decode_deltas(value)
        assert sum(len(d.entries) for d in deltas) <= 10 or len(deltas) == 1
        for d in deltas:
            assert partition_for(d.key.encode(), 3) == partition  # where a v1 message keyed by it would go
            got.setdefault(d.key, []).extend(d.entries)
    assert got == whole  # every key's entries, once, in order, however the messages are cut
    assert len(batch.partition_messages(3)) == 3 < len(whole)  # one message per partition, not per key
