"""Request identities already priced, remembered one changelog record per batch. Pure over a mapping.

The pricing stage must price a request (its tenant-scoped identity, ``tokenledger.identity``)
once for 35 days. Records written before tenant scoping hold ``source|request_id``; they are
read as they are, and :attr:`PartitionIndex.legacy` tells the pricing stage to look such a
request up by that old form too until the last of them expires. One table
record per identity cost one changelog record per event, the largest single item of the old
per-event produce overhead. Instead each batch (one source partition's share) writes one
record holding all the identities it priced, and the table itself is restored from its
changelog by Faust before any event of its partition is processed.

Memory: a worker remembers every request of 35 days, so each identity's in-memory cost
counts. A record is kept packed (:func:`pack_record`: the identities' bytes joined by NUL,
their event times and positions as ``int64``; ~40 bytes an identity) and its changelog form
stays the JSON ``{"ids": [[identity, epoch s, position], ...]}``. The per-event lookup goes
through an index of identity hashes per source partition (:class:`HashBag`, ~14 bytes an
identity): a hash not in it was never priced; a hash in it is confirmed by finding the exact
identity in the partition's records, newest first (a replay or a duplicate is almost always
recent), so a hash collision can never drop an event. The index is rebuilt from the table
after each rebalance.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, insort
from collections.abc import MutableMapping
from typing import Any

from stream_jobs.durable_table import Packing
from tokenledger.identity import SEP

EXPIRE_EVERY = 10_000
Identity = tuple[int, int, int]  # (event epoch s, source partition, offset)
_COUNT = struct.Struct("<xI")  # version byte, then the number of identities
_SEP = b"\x00"  # no part of an identity may hold a control character (the v1 schema): never a NUL
_UNIT = SEP.encode()


def is_repeat(remembered: Any, partition: int, offset: int) -> bool:
    """Whether an identity seen before belongs to *another* message (a real duplicate).

    The same message replayed after a crash finds its own identity (same partition and
    offset): that is not a duplicate.
    """
    return remembered is not None and list(remembered[1:3]) != [partition, offset]


def batch_key(partition: int, first_offset: int) -> str:
    """Table key of a batch's identity record (source partition first: expiry scans one partition)."""
    return f"{partition}:{first_offset}"


def pack_record(ids: list[tuple[str, int, int]]) -> bytes:
    """The in-memory form of a record of ``(identity, epoch s, position)``."""
    n = len(ids)
    numbers = struct.pack(f"<{2 * n}q", *(at for _, at, _ in ids), *(pos for _, _, pos in ids))
    blob = _SEP + _SEP.join(identity.encode() for identity, _, _ in ids) + _SEP
    return b"\x01" + struct.pack("<I", n) + numbers + blob


def unpack_record(packed: bytes) -> list[tuple[str, int, int]]:
    """The ``(identity, epoch s, position)`` of a packed record, in order."""
    (n,) = _COUNT.unpack_from(packed)
    numbers = struct.unpack_from(f"<{2 * n}q", packed, 5)
    names = packed[5 + 16 * n + 1 : -1].split(_SEP) if n else []
    return [(names[i].decode(), numbers[i], numbers[n + i]) for i in range(n)]


def _find(packed: bytes, identity: bytes) -> tuple[int, int] | None:
    """``(epoch s, position)`` of ``identity`` in a packed record, or ``None``."""
    (n,) = _COUNT.unpack_from(packed)
    start = 5 + 16 * n
    at = packed.find(_SEP + identity + _SEP, start)
    if at < 0:
        return None
    i = packed.count(_SEP, start, at)  # identities before it
    at_s, pos = struct.unpack_from("<q", packed, 5 + 8 * i)[0], struct.unpack_from("<q", packed, 5 + 8 * (n + i))[0]
    return at_s, pos


def _names(packed: bytes) -> list[bytes]:
    (n,) = _COUNT.unpack_from(packed)
    return packed[5 + 16 * n + 1 : -1].split(_SEP) if n else []


def _legacy(names: list[bytes]) -> int:
    """How many of ``names`` predate tenant scoping (no unit separator: ``source|request_id``)."""
    return sum(1 for name in names if _UNIT not in name)


def in_memory_form(value: Any) -> Any:
    """A record as restored from the changelog (a dict) or as written by this worker (packed)."""
    if isinstance(value, dict):
        return pack_record([(str(i), int(at), int(pos)) for i, at, pos in value["ids"]])
    return value


def _changelog_form(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"ids": [list(item) for item in unpack_record(value)]}
    return value


PACKING = Packing("tokenledger-identities", in_memory_form, _changelog_form)


class HashBag:
    """A multiset of 64-bit hashes kept in ``array('q')`` buckets: ~14 bytes a member (a dict of ints costs ~85).

    Buckets are chosen by the hash's low bits and split in two when they average more than
    16 members, so a lookup scans a handful of machine integers.
    """

    def __init__(self) -> None:
        self._mask = 15
        self._buckets = [array("q") for _ in range(16)]
        self._n = 0

    def add(self, h: int) -> None:
        """Add one occurrence of ``h``."""
        self._buckets[h & self._mask].append(h)
        self._n += 1
        if self._n > 16 * len(self._buckets):
            self._grow()

    def discard(self, h: int) -> None:
        """Remove one occurrence of ``h`` (if any)."""
        bucket = self._buckets[h & self._mask]
        if h in bucket:
            bucket.remove(h)
            self._n -= 1

    def __contains__(self, h: int) -> bool:
        return h in self._buckets[h & self._mask]

    def __len__(self) -> int:
        return self._n

    def _grow(self) -> None:
        mask = self._mask * 2 + 1
        buckets = [array("q") for _ in range(mask + 1)]
        for bucket in self._buckets:
            for h in bucket:
                buckets[h & mask].append(h)
        self._mask, self._buckets = mask, buckets


class PartitionIndex:
    """The identities recorded from one source partition: hashes counted, exact answers from the records."""

    def __init__(self, table: MutableMapping[str, Any], partition: int) -> None:
        self._table = table
        self.partition = partition
        self.hashes = HashBag()  # hash(identity encoded), once per record holding it
        self.legacy = 0  # identities recorded before tenant scoping: looked up by their old form too
        self._firsts: list[int] = []  # first positions of the partition's records, ascending

    def add_record(self, first: int, packed: bytes) -> None:
        """Index a stored record."""
        add = self.hashes.add
        names = _names(packed)
        for name in names:
            add(hash(name))
        self.legacy += _legacy(names)
        insort(self._firsts, first)

    def drop_record(self, first: int, packed: bytes) -> None:
        """Forget a record (expired)."""
        discard = self.hashes.discard
        names = _names(packed)
        for name in names:
            discard(hash(name))
        self.legacy -= _legacy(names)
        if self.holds(first):
            self._firsts.remove(first)

    def holds(self, first: int) -> bool:
        """Whether the record starting at ``first`` is indexed."""
        i = bisect_left(self._firsts, first)
        return i < len(self._firsts) and self._firsts[i] == first

    def get(self, identity: str) -> Identity | None:
        """``(epoch s, partition, position)`` of a recorded identity, or ``None``."""
        name = identity.encode()
        if hash(name) not in self.hashes:
            return None
        for first in reversed(self._firsts):
            record = _record(self._table, self.partition, first)
            found = _find(record, name) if record is not None else None
            if found is not None:
                return found[0], self.partition, found[1]
        return None  # another identity with the same hash

    def __contains__(self, identity: str) -> bool:
        return self.get(identity) is not None

    def __len__(self) -> int:
        return len(self.hashes)


def _record(table: MutableMapping[str, Any], partition: int, first: int) -> bytes | None:
    value = table.get(batch_key(partition, first))
    return in_memory_form(value) if value else None


class BatchIdentities:
    """The identities of every batch record of a table, indexed per source partition."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self._table = table
        self._index: dict[int, PartitionIndex] = {}

    def forget_index(self) -> None:
        """Drop the index (after a rebalance: it is rebuilt from the table on next use)."""
        self._index.clear()

    def of(self, partition: int) -> PartitionIndex:
        """The identities recorded from ``partition`` (``.get(identity)`` answers ``Identity | None``)."""
        index = self._index.get(partition)
        if index is None:
            index = PartitionIndex(self._table, partition)
            prefix = f"{partition}:"
            for key, record in list(self._table.items()):
                if record and key.startswith(prefix):
                    index.add_record(int(key[len(prefix) :]), in_memory_form(record))
            self._index[partition] = index
        return index

    @staticmethod
    def records(ids: dict[str, Identity], per_record: int = 2_000) -> list[tuple[int, bytes]]:
        """``(first position, table value)`` of a batch's newly priced identities, in parts.

        Parts of ``per_record`` (~120 KB of changelog JSON each: far under the broker's message
        limit). Call :meth:`remember` once they are durable.
        """
        items = [(identity, at, pos) for identity, (at, _, pos) in ids.items()]
        return [(items[i][2], pack_record(items[i : i + per_record])) for i in range(0, len(items), per_record)]

    def remember(self, partition: int, records: list[tuple[int, bytes]]) -> None:
        """Index a batch's records (what :meth:`records` made) once they are durable."""
        index = self.of(partition)
        for first, packed in records:
            if not index.holds(first):  # rebuilt from the table after the write: already indexed
                index.add_record(first, packed)

    def expired(self, partition: int, horizon_s: float) -> list[str]:
        """Keys of ``partition``'s batch records whose every identity is older than ``horizon_s``.

        Removes them from the index; the caller deletes the keys (from inside an agent: Faust
        routes a delete to the changelog partition of the current event).
        """
        prefix = f"{partition}:"
        index = self.of(partition)
        old = []
        for key, value in list(self._table.items()):
            if not value or not key.startswith(prefix):
                continue
            packed = in_memory_form(value)
            (n,) = _COUNT.unpack_from(packed)
            if max(struct.unpack_from(f"<{n}q", packed, 5), default=0) < horizon_s:
                old.append(key)
                index.drop_record(int(key[len(prefix) :]), packed)
        return old
