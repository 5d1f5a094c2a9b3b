"""A Faust table whose changelog writes can be awaited until the broker has acknowledged them.

A table can also keep its values packed in memory while its changelog carries JSON
(:class:`Packing`): a worker holding a million keys then pays ~100 bytes a value, not the
~1 KB of nested Python dicts, and changelog readers see the same JSON as ever.

Faust sends a table write to its changelog through a producer buffer and forgets the future.
Its commit path flushes that buffer only for ~0.1 s (``ProducerBuffer.flush_atmost``), so
an offset can be committed while state it produced is still unsent. The agents instead await
:meth:`DurableTable.confirm` before they let a batch's events be acknowledged: what a committed
offset covers is always on the broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import faust
import msgspec
from faust.serializers import codecs

_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Packing:
    """A table's in-memory form: ``pack`` a changelog (JSON-able) value, ``unpack`` it back."""

    name: str  # the changelog codec's name
    pack: Callable[[Any], Any]
    unpack: Callable[[Any], Any]


class PackedJsonCodec(codecs.Codec):
    """Changelog codec of a packed table: JSON out (of the unpacked value), a packed value in."""

    def __init__(self, packing: Packing) -> None:
        super().__init__()
        self._packing = packing

    def _dumps(self, obj: Any) -> bytes:
        return _json.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self._packing.pack(msgspec.json.decode(s))


class DurableTable(faust.Table[str, Any]):
    """A ``faust.Table`` that remembers each changelog send until :meth:`confirm`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._unconfirmed: list[asyncio.Future[Any]] = []
        # In-memory value -> what the changelog's codec serializes (Faust sends bytes values
        # as they are, without their codec: a packed value is unpacked here first).
        self.changelog_form: Callable[[Any], Any] | None = None
        # The changelog form of the value being set, when the writer has it (see :meth:`set_packed`).
        self._form: tuple[Any, Any, Any] | None = None

    def set_packed(self, key: Any, packed: Any, form: Any) -> None:
        """``self[key] = packed``, whose changelog form the caller already holds (``form``).

        Faust sends the changelog record from inside the assignment: handing the form over saves
        unpacking what was packed a moment before (~20 µs for a busy key's spend record).
        """
        self._form = (key, packed, form)
        try:
            self[key] = packed
        finally:
            self._form = None

    def send_changelog(self, partition: int | None, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        """Faust's changelog send (public API), with its future kept for :meth:`confirm`."""
        held = self._form
        if held is not None and held[0] == key and held[1] is value:
            value = held[2]
        elif self.changelog_form is not None and value is not None:
            value = self.changelog_form(value)
        fut = super().send_changelog(partition, key, value, *args, **kwargs)
        self._unconfirmed.append(fut)
        return fut

    async def confirm(self) -> None:
        """Wait until every changelog write so far is acknowledged; raise if one failed."""
        pending, self._unconfirmed = self._unconfirmed, []
        if pending:
            await asyncio.gather(*pending)


def durable_table(app: faust.App, name: str, partitions: int, packing: Packing | None = None) -> DurableTable:
    """Register a :class:`DurableTable` on ``app`` as ``app.Table(name, default=None)`` would.

    With ``packing``, values restored from the changelog are packed, and packed values are
    written to the changelog unpacked, as JSON.
    """
    table = DurableTable(app, name=name, default=None, beacon=app.tables.beacon, partitions=partitions)
    if packing is not None:
        codecs.register(packing.name, PackedJsonCodec(packing))
        table.value_serializer = packing.name  # read when the changelog topic is first made
        table.changelog_form = packing.unpack
    return cast(DurableTable, app.tables.add(table))
