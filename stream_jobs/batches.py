"""Batches of stream events, one source partition at a time, for agents that stage table writes.

Faust routes a table write to the changelog partition of the *current event*. Inside a batch
that is whichever event arrived last, possibly from another partition, so each partition's
share of a batch is handed out with one of its own events made current.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from faust.streams import _current_event


async def partition_batches(stream: Any, max_events: int, within_s: float) -> AsyncIterator[tuple[int, list[Any]]]:
    """Yield ``(partition, events)`` groups of each batch of up to ``max_events`` events.

    Faust acknowledges a batch's events only when the next batch is requested, that is after
    every group of this one was processed: a crash mid-batch replays the whole batch.
    """
    async for events in stream.take_events(max_events, within=within_s):
        by_partition: dict[int, list[Any]] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        for partition, group in by_partition.items():
            token = _current_event.set(weakref.ref(group[-1]))
            try:
                yield partition, group
            finally:
                _current_event.reset(token)


class Staged:
    """Table writes made while one partition's share of a batch is processed, applied once.

    Reads through :meth:`get` see the batch's own earlier writes; :meth:`flush` then writes
    each touched key once (one changelog record per key per batch, not per event). The batch's
    events are acknowledged only after it is done, so a crash before the flush replays the
    whole batch against unchanged tables. Works on any mapping (Faust tables, plain dicts).
    """

    def __init__(self) -> None:
        self._writes: dict[int, tuple[MutableMapping[str, Any], dict[str, Any]]] = {}
        self._counts: dict[int, tuple[MutableMapping[str, int], dict[str, int]]] = {}

    def get(self, table: MutableMapping[str, Any], key: str) -> Any:
        """The value of ``key``: staged in this batch, else the table's."""
        staged = self.written(table)
        return staged[key] if key in staged else table.get(key)

    def set(self, table: MutableMapping[str, Any], key: str, value: Any) -> None:
        """Stage ``table[key] = value``."""
        self._writes.setdefault(id(table), (table, {}))[1][key] = value

    def written(self, table: MutableMapping[str, Any]) -> dict[str, Any]:
        """The keys staged for ``table`` so far (do not modify)."""
        entry = self._writes.get(id(table))
        return entry[1] if entry is not None else {}

    def add(self, table: MutableMapping[str, int], key: str, n: int = 1) -> None:
        """Stage ``table[key] += n`` (counter tables)."""
        counts = self._counts.setdefault(id(table), (table, {}))[1]
        counts[key] = counts.get(key, 0) + n

    def flush(self) -> None:
        """Apply every staged write, one per key."""
        for table, values in self._writes.values():
            for key, value in values.items():
                table[key] = value
        for counter, counts in self._counts.values():
            for key, n in counts.items():
                counter[key] = counter.get(key, 0) + n
