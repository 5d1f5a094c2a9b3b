"""partition_batches: each partition's share of a batch, with one of its events made current."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from faust.streams import current_event

from stream_jobs.batches import Staged, partition_batches
from stream_jobs.dead_letters import origin_key, origin_of


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


def test_staged_reads_its_own_writes_and_flushes_each_key_once() -> None:
    spend = CountingTable({"acme|tenant=acme": 5})
    counters = CountingTable()
    staged = Staged()
    for nanos in (10, 20, 30):  # three events touching the same key
        key = "acme|tenant=acme"
        staged.set(spend, key, staged.get(spend, key) + nanos)
        staged.add(counters, "priced")
    staged.set(spend, "acme|user=u1", 7)
    assert spend == {"acme|tenant=acme": 5} and spend.writes == 0  # nothing written before the flush
    assert staged.get(spend, "acme|tenant=acme") == 65 and staged.get(spend, "missing") is None
    assert staged.written(spend) == {"acme|tenant=acme": 65, "acme|user=u1": 7}
    staged.flush()
    assert spend == {"acme|tenant=acme": 65, "acme|user=u1": 7}
    assert spend.writes == 2  # one write per key, not per event
    assert counters == {"priced": 3} and counters.writes == 1
