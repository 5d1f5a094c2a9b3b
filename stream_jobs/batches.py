"""Batches of stream events, one source partition at a time, for agents that stage table writes.

Faust routes a table write to the changelog partition of the *current event*. Inside a batch
that is whichever event arrived last, possibly from another partition, so each partition's
share of a batch is handed out with one of its own events made current.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event


async def partition_batches(stream: Any, max_events: int, within_s: float) -> AsyncIterator[tuple[int, list[Any]]]:
    """Yield ``(partition, events)`` groups of each batch of up to ``max_events`` events.

    Faust acknowledges a batch's events only when the next batch is requested, that is after
    every group of this one was processed: a crash mid-batch replays the whole batch.
    """
    async for by_partition in batches_by_partition(stream, max_events, within_s):
        for partition, group in by_partition.items():
            with as_current(group):
                yield partition, group


async def batches_by_partition(stream: Any, max_events: int, within_s: float) -> AsyncIterator[dict[int, list[Any]]]:
    """Yield each batch of up to ``max_events`` events as ``{partition: events}``.

    Table writes of a partition's events must be made with one of them current: see
    :func:`as_current`. As with :func:`partition_batches`, the batch is acknowledged only when
    the next one is requested.
    """
    async for events in stream.take_events(max_events, within=within_s):
        by_partition: dict[int, list[Any]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        yield by_partition


def byte_chunks(groups: dict[int, list[Any]], max_bytes: int) -> Iterator[dict[int, list[Any]]]:
    """Split ``{partition: events}`` into consecutive chunks of at most ~``max_bytes`` of values each.

    Every event lands in exactly one chunk, in order within its partition; a single event larger
    than ``max_bytes`` is a chunk of its own.
    """
    chunk: dict[int, list[Any]] = {}
    size = 0
    for partition, events in groups.items():
        for event in events:
            n = len(event.value or b"")
            if chunk and size + n > max_bytes:
                yield chunk
                chunk, size = {}, 0
            chunk.setdefault(partition, []).append(event)
            size += n
    if chunk:
        yield chunk


@contextmanager
def as_current(group: list[Any]) -> Iterator[None]:
    """Make the last event of ``group`` Faust's current event (table writes go to its changelog partition)."""
    token = _current_event.set(weakref.ref(group[-1]))
    try:
        yield
    finally:
        _current_event.reset(token)


APPLIED = "applied"  # in every staged dict record: {source partition: offset of the last event folded in}
# Records folded from spend deltas: {usage-raw partition: position of the last entry folded in}.
# A field of its own: stamps of the per-event design (usage-priced offsets) mean something else.
RAW_APPLIED = "applied_raw"


def applied_offset(record: Any, partition: str) -> int:
    """Offset of the last event of ``partition`` folded into ``record`` (-1: none)."""
    if isinstance(record, dict):
        return int(record.get(APPLIED, {}).get(partition, -1))
    return -1


class Staged:
    """Table writes and outputs of one partition's share of a batch, made durable together.

    Reads through :meth:`get` see the batch's own earlier writes; :meth:`commit` then waits
    for the batch's outputs, writes each touched key once (one changelog record per key per
    batch, not per event) and waits until the broker acknowledged those writes. Only then are
    the batch's events acknowledged, so a committed offset never covers state that is not on
    the broker.

    A crash can still leave *some* of a batch's records durable and others not (nothing makes
    several changelog records atomic). So every dict record carries, under ``applied``, the
    offset of the last event of each source partition folded into it; on a replay
    :meth:`fresh` tells, record by record, whether the current event is already in it. Each
    record then holds every event exactly once, whichever of its writes survived. Works on any
    mapping (Faust tables, plain dicts).
    """

    def __init__(self) -> None:
        self._writes: dict[int, tuple[MutableMapping[str, Any], dict[str, Any]]] = {}
        self._outputs: list[Awaitable[Any]] = []
        self._partition = ""
        self._offset = -1

    def at(self, partition: int, offset: int) -> None:
        """The event being folded now (its writes are stamped with this position)."""
        self._partition, self._offset = str(partition), offset

    def fresh(self, table: MutableMapping[str, Any], key: str) -> bool:
        """Whether the current event is not yet folded into ``table[key]``."""
        return applied_offset(self.get(table, key), self._partition) < self._offset

    def get(self, table: MutableMapping[str, Any], key: str) -> Any:
        """The value of ``key``: staged in this batch, else the table's."""
        staged = self.written(table)
        return staged[key] if key in staged else table.get(key)

    def set(
        self, table: MutableMapping[str, Any], key: str, value: Any, applied: Mapping[str, int] | None = None
    ) -> None:
        """Stage ``table[key] = value``; a dict value is stamped with the current event's position.

        ``applied`` stamps these last raw positions per ``usage-raw`` partition instead, under
        :data:`RAW_APPLIED` (a value folded from spend deltas).
        """
        if isinstance(value, dict) and applied:
            before = self.get(table, key)
            stamp = dict(before.get(RAW_APPLIED, {})) if isinstance(before, dict) else {}
            stamp.update(applied)
            value = {**value, RAW_APPLIED: stamp}
        elif isinstance(value, dict) and self._offset >= 0:
            before = self.get(table, key)
            stamp = dict(before.get(APPLIED, {})) if isinstance(before, dict) else {}
            stamp[self._partition] = self._offset
            value = {**value, APPLIED: stamp}
        self._writes.setdefault(id(table), (table, {}))[1][key] = value

    def written(self, table: MutableMapping[str, Any]) -> dict[str, Any]:
        """The keys staged for ``table`` so far (do not modify)."""
        entry = self._writes.get(id(table))
        return entry[1] if entry is not None else {}

    def add(self, table: MutableMapping[str, Any], key: str, n: int = 1) -> None:
        """Stage ``table[key]["n"] += n`` (counter records), once per event."""
        if self.fresh(table, key):
            before = self.get(table, key)
            count = before["n"] if isinstance(before, dict) else int(before or 0)  # an int before 2026-11
            self.set(table, key, {"n": count + n})

    def output(self, sent: Awaitable[Any]) -> None:
        """A send of this batch (threshold, breaker, dead letter...) to wait for before the state."""
        self._outputs.append(sent)

    async def commit(self) -> None:
        """Wait for the outputs, apply every staged write (one per key), wait for their acknowledgement.

        Outputs first: a crash between the two replays the events, which re-sends the outputs
        (same deterministic keys, so readers can collapse them) but never loses one whose
        state change was already stored.
        """
        if self._outputs:
            await asyncio.gather(*self._outputs)
        for table, values in self._writes.values():
            for key, value in values.items():
                table[key] = value
        for table, _ in self._writes.values():
            confirm = getattr(table, "confirm", None)  # DurableTable; plain mappings are synchronous
            if confirm is not None:
                await confirm()
