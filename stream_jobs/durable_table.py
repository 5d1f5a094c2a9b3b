"""A Faust table whose changelog writes can be awaited until the broker has acknowledged them.

Faust sends a table write to its changelog through a producer buffer and forgets the future.
Its commit path flushes that buffer only for ~0.1 s (``ProducerBuffer.flush_atmost``), so
an offset can be committed while state it produced is still unsent. The agents instead await
:meth:`DurableTable.confirm` before they let a batch's events be acknowledged: what a committed
offset covers is always on the broker.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust


class DurableTable(faust.Table[str, Any]):
    """A ``faust.Table`` that remembers each changelog send until :meth:`confirm`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._unconfirmed: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        """Faust's changelog send (public API), with its future kept for :meth:`confirm`."""
        fut = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(fut)
        return fut

    async def confirm(self) -> None:
        """Wait until every changelog write so far is acknowledged; raise if one failed."""
        pending, self._unconfirmed = self._unconfirmed, []
        if pending:
            await asyncio.gather(*pending)


def durable_table(app: faust.App, name: str, partitions: int) -> DurableTable:
    """Register a :class:`DurableTable` on ``app`` as ``app.Table(name, default=None)`` would."""
    table = DurableTable(app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions)
    return cast(DurableTable, app.tables.add(table))
