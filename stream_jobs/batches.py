"""Batches of stream events, one source partition at a time, for agents that stage table writes.

Faust routes a table write to the changelog partition of the *current event*. Inside a batch
that is whichever event arrived last, possibly from another partition, so each partition's
share of a batch is handed out with one of its own events made current.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
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
