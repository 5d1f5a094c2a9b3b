"""Request identities already priced, remembered one changelog record per batch. Pure over a mapping.

The pricing stage must price a request (``source|request_id``) once for 35 days. One table
record per identity cost one changelog record per event, the largest single item of the old
per-event produce overhead. Instead each batch (one source partition's share) writes one
record holding all the identities it priced; an in-memory index over those records answers
the per-event lookups, and is rebuilt from the table after each rebalance (the table itself
is restored from its changelog by Faust before any event of its partition is processed).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

EXPIRE_EVERY = 10_000
Identity = tuple[int, int, int]  # (event epoch s, source partition, offset)


def is_repeat(remembered: Any, partition: int, offset: int) -> bool:
    """Whether an identity seen before belongs to *another* message (a real duplicate).

    The same message replayed after a crash finds its own identity (same partition and
    offset): that is not a duplicate.
    """
    return remembered is not None and list(remembered[1:3]) != [partition, offset]


def batch_key(partition: int, first_offset: int) -> str:
    """Table key of a batch's identity record (source partition first: expiry scans one partition)."""
    return f"{partition}:{first_offset}"


class BatchIdentities:
    """The identities of every batch record of a table, indexed per source partition."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self._table = table
        self._index: dict[int, dict[str, Identity]] = {}

    def forget_index(self) -> None:
        """Drop the index (after a rebalance: it is rebuilt from the table on next use)."""
        self._index.clear()

    def of(self, partition: int) -> dict[str, Identity]:
        """``identity -> (epoch s, partition, offset)`` of every identity recorded from ``partition``."""
        index = self._index.get(partition)
        if index is None:
            index = {}
            prefix = f"{partition}:"
            for key, record in self._table.items():
                if record and key.startswith(prefix):
                    for identity, epoch_s, offset in record["ids"]:
                        index.setdefault(identity, (epoch_s, partition, offset))
            self._index[partition] = index
        return index

    @staticmethod
    def records(ids: dict[str, Identity], per_record: int = 2_000) -> list[tuple[int, dict[str, Any]]]:
        """``(first position, table value)`` of a batch's newly priced identities, in parts.

        Parts of ``per_record`` (~120 KB each: far under the broker's message limit). Call
        :meth:`remember` once they are durable.
        """
        items = list(ids.items())
        return [
            (items[i][1][2], {"ids": [[identity, at, pos] for identity, (at, _, pos) in items[i : i + per_record]]})
            for i in range(0, len(items), per_record)
        ]

    def remember(self, partition: int, ids: dict[str, Identity]) -> None:
        """Add a durable batch record's identities to the index."""
        self.of(partition).update(ids)

    def expired(self, partition: int, horizon_s: float) -> list[str]:
        """Keys of ``partition``'s batch records whose every identity is older than ``horizon_s``.

        Removes their identities from the index; the caller deletes the keys (from inside an
        agent: Faust routes a delete to the changelog partition of the current event).
        """
        prefix = f"{partition}:"
        old = [
            k
            for k, v in self._table.items()
            if v and k.startswith(prefix) and max((at for _, at, _ in v["ids"]), default=0) < horizon_s
        ]
        index = self.of(partition)
        for key in old:
            for identity, _, offset in self._table[key]["ids"]:
                if index.get(identity, (0, partition, -1))[2] == offset:
                    del index[identity]
        return old
