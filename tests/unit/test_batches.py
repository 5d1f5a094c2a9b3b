"""partition_batches: each partition's share of a batch, with one of its events made current."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from faust.streams import current_event
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_jobs.batches import Staged, partition_batches
from stream_jobs.dead_letters import origin_key, origin_of
from tokenledger.schema.raw_batch import partition_for


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int


@dataclass
class Ev:
    message: Msg


class FakeStream:
    def __init__(self, batches: list[list[Ev]]) -> None:
        self.batches = batches
        self.requested = 0

    async def take_events(self, max_: int, within: float) -> AsyncIterator[list[Ev]]:
        for batch in self.batches:
            self.requested += 1
            yield batch


def test_groups_by_partition_and_sets_the_current_event() -> None:
    a = [Ev(Msg("raw", p, o)) for p, o in [(0, 10), (2, 5), (0, 11), (1, 7), (2, 6)]]
    b = [Ev(Msg("raw", 1, 8))]
    stream = FakeStream([a, b])
    seen: list[tuple[int, list[int], Any, int]] = []

    async def run() -> None:
        async for partition, group in partition_batches(stream, 500, 0.1):
            ev = current_event()
            assert ev is not None
            seen.append((partition, [e.message.offset for e in group], ev.message.partition, stream.requested))
        assert current_event() is None  # restored after the iteration

    asyncio.run(run())
    assert seen == [
        (0, [10, 11], 0, 1),  # table writes of this group go to changelog partition 0
        (2, [5, 6], 2, 1),
        (1, [7], 1, 1),
        (1, [8], 1, 2),  # the next batch is requested (and the first acknowledged) only now
    ]


def test_dead_letter_key_is_the_origin() -> None:
    msg = Msg("usage-priced", 2, 41)
    assert origin_of(msg) == {"topic": "usage-priced", "partition": 2, "offset": 41}
    assert origin_key(msg) == b"usage-priced/2/41"


class CountingTable(dict[str, Any]):
    """A mapping that counts writes, as a changelog would."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_staged_reads_its_own_writes_and_commits_each_key_once() -> None:
    spend = CountingTable({"acme|tenant=acme": {"n": 5}})
    counters = CountingTable()
    staged = Staged()
    for offset, nanos in ((10, 10), (11, 20), (12, 30)):  # three events touching the same key
        staged.at(0, offset)
        key = "acme|tenant=acme"
        staged.set(spend, key, {"n": staged.get(spend, key)["n"] + nanos})
        staged.add(counters, "priced")
    staged.set(spend, "acme|user=u1", {"n": 7})
    assert spend == {"acme|tenant=acme": {"n": 5}} and spend.writes == 0  # nothing written before the commit
    assert staged.get(spend, "acme|tenant=acme") == {"n": 65, "applied": {"0": 12}}
    assert staged.get(spend, "missing") is None
    asyncio.run(staged.commit())
    assert spend == {
        "acme|tenant=acme": {"n": 65, "applied": {"0": 12}},
        "acme|user=u1": {"n": 7, "applied": {"0": 12}},
    }
    assert spend.writes == 2  # one write per key, not per event
    assert counters == {"priced": {"n": 3, "applied": {"0": 12}}} and counters.writes == 1


class Confirming(dict[str, Any]):
    """A table whose writes become durable only when confirmed (as a changelog's acknowledgement)."""

    def __init__(self) -> None:
        super().__init__()
        self.confirmed: dict[str, Any] = {}

    async def confirm(self) -> None:
        self.confirmed = dict(self)


def test_commit_waits_for_outputs_before_state_and_confirms_state() -> None:
    order: list[str] = []
    table = Confirming()

    async def output() -> None:
        order.append("output")

    async def run() -> None:
        staged = Staged()
        staged.at(1, 4)
        staged.output(output())
        staged.set(table, "k", {"n": 1})
        assert table == {}
        await staged.commit()
        order.append("state")

    asyncio.run(run())
    assert order == ["output", "state"] and table.confirmed == {"k": {"n": 1, "applied": {"1": 4}}}


KEYS = ("tenant", "user", "dept")


def fold_all(tables: dict[str, dict[str, Any]], events: list[tuple[int, int, tuple[str, ...]]]) -> None:
    """The spend agent's rule in miniature: add each event to each of its keys, once per record."""
    staged = Staged()
    for offset, nanos, keys in events:
        staged.at(0, offset)
        for key in keys:
            if staged.fresh(tables["spend"], key):
                before = staged.get(tables["spend"], key) or {"n": 0}
                staged.set(tables["spend"], key, {"n": before["n"] + nanos})
    asyncio.run(staged.commit())


@given(
    nanos=st.lists(st.integers(1, 10**9), min_size=1, max_size=40),
    batch=st.integers(1, 10),
    crash_batch=st.integers(0, 40),
    survivors=st.sets(st.sampled_from(KEYS)),
    touch=st.randoms(use_true_random=False),
)
def test_a_crash_with_any_subset_of_a_batch_durable_replays_to_the_exact_sums(
    nanos: list[int], batch: int, crash_batch: int, survivors: set[str], touch: Any
) -> None:
    events = [(i, n, tuple(k for k in KEYS if touch.random() < 0.7) or ("tenant",)) for i, n in enumerate(nanos)]
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    crash_at = min(crash_batch, len(batches) - 1)
    tables: dict[str, dict[str, Any]] = {"spend": {}}
    for b in batches[:crash_at]:
        fold_all(tables, b)
    committed = crash_at * batch  # offsets below are committed; the crashed batch is not
    # The crashed batch: only some of its records reached the broker before kill -9.
    before = dict(tables["spend"])
    fold_all(tables, batches[crash_at])
    tables["spend"] = {k: v for k, v in tables["spend"].items() if k in survivors or k not in KEYS} | {
        k: v for k, v in before.items() if k not in survivors
    }
    # Restart: replay everything from the committed offset.
    replay = [e for e in events if e[0] >= committed]
    for i in range(0, len(replay), batch):
        fold_all(tables, replay[i : i + batch])
    truth = {k: sum(n for _, n, keys in events if k in keys) for k in KEYS}
    assert {k: v["n"] for k, v in tables["spend"].items()} == {k: v for k, v in truth.items() if v}


def test_counters_written_before_applied_offsets_keep_counting() -> None:
    counters: dict[str, Any] = {"duplicates": 5}  # a plain int, as tables held them before
    staged = Staged()
    staged.at(2, 9)
    staged.add(counters, "duplicates")
    staged.add(counters, "duplicates")  # the same event again: counted once
    asyncio.run(staged.commit())
    assert counters == {"duplicates": {"n": 6, "applied": {"2": 9}}}


@settings(max_examples=500, deadline=None)
@given(key=st.binary(max_size=200), partitions=st.integers(1, 64))
def test_partition_for_is_kafka_s_murmur2(key: bytes, partitions: int) -> None:
    from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]  # noqa: PLC0415 - the reference

    assert partition_for(key, partitions) == (murmur2(key) & 0x7FFFFFFF) % partitions
