"""Spend records packed in worker memory, JSON on the changelog.

A worker holds one spend record per dimension value, so with a million users the record's
in-memory form decides the worker's size. As Python dicts a one-request user's record took
~1.2 KB (six dicts); packed with :mod:`struct` it takes ~80 bytes. Its changelog form stays
the JSON dict it always was (:data:`PACKING`), so readers of the changelog and workers
restoring from an older changelog see no change.

Packed layout (little-endian): a version byte; the number of day, month, minute, hour and
applied entries (one byte each); day and month entries as (epoch minute of the period's UTC
start ``uint32``, nano-USD); minute and hour entries as (epoch minute of the bucket
``uint32``, nano-USD); applied entries as (``usage-raw`` partition ``uint16``, position
``int64``). Amounts are ``uint32`` in version ``2`` (all of them under 4.29 USD: most users'
buckets) and ``int64`` in version ``1``. A record that does not fit (a key in another form, an
amount beyond ``int64``) is kept as version ``0`` followed by its JSON.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from stream_jobs.batches import RAW_APPLIED
from stream_jobs.durable_table import DurableTable, Packing

_HEADER = struct.Struct("<B5B")
_INT64 = (-(1 << 63), (1 << 63) - 1)
_STRUCTS: dict[tuple[int, ...], struct.Struct] = {}  # (version, counts...) -> layout
_PERIOD_MINUTES: dict[str, int] = {}  # "2026-10-31T16:00Z" -> epoch minute
_PERIOD_KEYS: dict[int, str] = {}
_BUCKET_KEYS: dict[int, str] = {}  # epoch minute -> "1762156800"
_BUCKET_MINUTES: dict[str, int] = {}  # "1762156800" -> epoch minute (only keys that fit)
_CACHE_MAX = 100_000
_json = msgspec.json.Encoder()
_FOLDED = {"day", "month", "minute", "hour"}
_FIELDS = {*_FOLDED, RAW_APPLIED}


class _Unfit(Exception):
    """A record the packed layout cannot hold exactly."""


def _layout(version: int, counts: tuple[int, ...]) -> struct.Struct:
    found = _STRUCTS.get((version, *counts))
    if found is None:
        day, month, minute, hour, applied = counts
        bucket = "II" if version == _SMALL else "Iq"
        found = struct.Struct("<6x" + bucket * (day + month + minute + hour) + "Hq" * applied)
        _STRUCTS[(version, *counts)] = found
    return found


_WIDE, _SMALL = 1, 2  # versions: int64 amounts, uint32 amounts


def _period_minute(key: str) -> int:
    found = _PERIOD_MINUTES.get(key)
    if found is None:
        try:
            at = datetime.strptime(key, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)
        except ValueError:
            raise _Unfit(key) from None
        found = int(at.timestamp()) // 60
        if at.strftime("%Y-%m-%dT%H:%MZ") != key or found < 0:
            raise _Unfit(key)
        if len(_PERIOD_MINUTES) >= _CACHE_MAX:
            _PERIOD_MINUTES.clear()
        _PERIOD_MINUTES[key] = found
    return found


def _period_key(minute: int) -> str:
    found = _PERIOD_KEYS.get(minute)
    if found is None:
        found = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ")
        if len(_PERIOD_KEYS) >= _CACHE_MAX:
            _PERIOD_KEYS.clear()
        _PERIOD_KEYS[minute] = found
    return found


def _bucket_minute(key: str) -> int:
    found = _BUCKET_MINUTES.get(key)
    if found is None:
        seconds = int(key) if key.isdigit() else -1
        if seconds < 0 or seconds % 60 or str(seconds) != key or seconds // 60 >= 1 << 32:
            raise _Unfit(key)
        found = seconds // 60
        if len(_BUCKET_MINUTES) >= _CACHE_MAX:
            _BUCKET_MINUTES.clear()
        _BUCKET_MINUTES[key] = found
    return found


def _bucket_key(minute: int) -> str:
    found = _BUCKET_KEYS.get(minute)
    if found is None:
        found = str(minute * 60)
        if len(_BUCKET_KEYS) >= _CACHE_MAX:
            _BUCKET_KEYS.clear()
        _BUCKET_KEYS[minute] = found
    return found


def _nanos(value: Any) -> int:
    if type(value) is not int or not _INT64[0] <= value <= _INT64[1]:
        raise _Unfit(value)
    return value


def pack(record: dict[str, Any]) -> bytes:
    """The packed form of a spend record (a dict of ``day``, ``month``, ``minute``, ``hour``, ``applied_raw``)."""
    try:
        if set(record) - _FIELDS or not set(record) >= _FOLDED:
            raise _Unfit(record)
        values: list[int] = []
        counts = []
        for name, cache, to_minute in (
            ("day", _PERIOD_MINUTES, _period_minute),
            ("month", _PERIOD_MINUTES, _period_minute),
            ("minute", _BUCKET_MINUTES, _bucket_minute),
            ("hour", _BUCKET_MINUTES, _bucket_minute),
        ):
            part = record.get(name) or {}
            counts.append(len(part))
            # Per record, not per bucket: one C-level pass each for the keys (cached) and the amounts.
            found = [cache.get(k) for k in part]
            minutes = [to_minute(k) for k in part] if None in found else cast(list[int], found)
            pairs = [0] * (2 * len(minutes))
            pairs[0::2] = minutes
            pairs[1::2] = part.values()
            values += pairs
        amounts = values[1::2]
        if amounts and not (
            all(type(v) is int for v in amounts) and _INT64[0] <= min(amounts) and max(amounts) <= _INT64[1]
        ):
            raise _Unfit(amounts)
        applied = record.get(RAW_APPLIED) or {}
        counts.append(len(applied))
        for p, pos in applied.items():
            if not p.isdigit() or str(int(p)) != p or int(p) >= 1 << 16:
                raise _Unfit(p)
            values.append(int(p))
            values.append(_nanos(pos))
        if max(counts) > 255:
            raise _Unfit(counts)
        version = _SMALL if not amounts or (min(amounts) >= 0 and max(amounts) < 1 << 32) else _WIDE
        layout = _layout(version, tuple(counts))
        out = bytearray(layout.size)
        layout.pack_into(out, 0, *values)  # its first six bytes are padding: the header goes there
        _HEADER.pack_into(out, 0, version, *counts)
        return bytes(out)
    except (_Unfit, struct.error):
        return b"\x00" + _json.encode(record)


def unpack(packed: bytes) -> dict[str, Any]:
    """The spend record of a packed form (dicts; a record without applied entries has no ``applied_raw``)."""
    if packed[0] == 0:
        return msgspec.json.decode(packed[1:])  # type: ignore[no-any-return]
    version, day, month, minute, hour, applied = _HEADER.unpack_from(packed)
    values = _layout(version, (day, month, minute, hour, applied)).unpack(packed)
    record: dict[str, Any] = {}
    i = 0
    for name, count, to_key in (
        ("day", day, _period_key),
        ("month", month, _period_key),
        ("minute", minute, _bucket_key),
        ("hour", hour, _bucket_key),
    ):
        record[name] = {to_key(values[j]): values[j + 1] for j in range(i, i + 2 * count, 2)}
        i += 2 * count
    if applied:
        record[RAW_APPLIED] = {str(values[j]): values[j + 1] for j in range(i, i + 2 * applied, 2)}
    return record


def _unpacked(value: Any) -> Any:
    return unpack(value) if isinstance(value, bytes) else value


def _packed(value: Any) -> Any:
    return pack(value) if isinstance(value, dict) else value


PACKING = Packing("tokenledger-spend", _packed, _unpacked)


class PackedView(MutableMapping[str, Any]):
    """A table of packed records seen as one of dicts (what :class:`stream_jobs.batches.Staged` reads and writes)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table

    def __getitem__(self, key: str) -> Any:
        value = self.table[key]
        return unpack(value) if isinstance(value, bytes) else value

    def get(self, key: str, default: Any = None) -> Any:  # noqa: D102  (Faust tables answer get without __contains__)
        value = self.table.get(key)
        if value is None:
            return default
        return unpack(value) if isinstance(value, bytes) else value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(value, dict):
            self.table[key] = value
        elif isinstance(self.table, DurableTable):  # its changelog record is this dict, not unpacked again
            self.table.set_packed(key, pack(value), value)
        else:
            self.table[key] = pack(value)

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    async def confirm(self) -> None:
        """The table's :meth:`DurableTable.confirm`."""
        await self.table.confirm()  # type: ignore[attr-defined]
