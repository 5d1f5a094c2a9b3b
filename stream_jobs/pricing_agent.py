"""Agent: raw usage events -> priced events and per-key spend deltas. Validates, de-duplicates, prices.

* invalid events go to the dead-letter topic with the reason, and are counted;
* running estimates of a stream (``final=false``) are counted but not billed: a request is
  billed once, at its final figure;
* an event outside its time window (later than its record's timestamp + 5 min, or older than
  that timestamp - 30 days) goes to the dead-letter topic: the record's own timestamp, not this
  worker's clock, so a replay after a crash decides exactly as the first pass did;
* a request is priced once: its tenant-scoped identity (``tokenledger.identity``) is remembered
  for 35 days of record time (more than the window, so a copy is never accepted after its
  identity expired). Each request has a home partition (murmur2 of ``source|request_id``, the
  key producers send); an event that arrived on another partition (a client with another
  partitioner, a retry that went elsewhere) is forwarded there unpriced, with its record's
  timestamp, and priced when it arrives: every copy of a request meets in one partition, so
  dedup does not depend on the producer's partitioner;
* each batch (one source partition's share) becomes: its priced events on ``usage-priced``
  (for the store: their stored rows, as Arrow columns, ~2,000 to a message,
  ``tokenledger.schema.priced_arrow``), one delta per touched
  key on ``spend-deltas`` (for the spend stage: every dimension value and every matching
  budget, see ``tokenledger.schema.deltas``), and one identity record in the ``priced-batches`` table.

Exactly once through crashes: the batch's priced events and deltas are acknowledged by the
broker first, then its identity record, and only then are its raw events acknowledged. A crash
before the identity record is durable replays the batch (maybe with other boundaries): it is
priced again to the same priced events (the store keeps one row per ``(tenant, source, id)``) and the
same delta entries (the spend stage skips entries at or below the raw offset it already folded
per key and source partition). A raw event that finds its own identity (same partition and
offset) was already delivered and is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from stream_jobs.app import (
    BATCH_MAX,
    BATCH_WITHIN_S,
    DEDUP_HORIZON_S,
    PARTITIONS,
    SETTINGS,
    app,
    control_state,
    dead_letter_topic,
    raw_topic,
)
from stream_jobs.async_producer import AsyncProducer
from stream_jobs.batches import Staged, as_current, batches_by_partition, byte_chunks
from stream_jobs.dead_letters import dead_letter_value, origin_key
from stream_jobs.delta_batch import DeltaBatch
from stream_jobs.diagnostics import stop_worker
from stream_jobs.durable_table import durable_table
from stream_jobs.identities import EXPIRE_EVERY, BatchIdentities, Identity, PartitionIndex, batch_key, is_repeat
from stream_jobs.identities import PACKING as IDENTITY_PACKING
from tokenledger import metrics
from tokenledger.batch_pricing import events_of
from tokenledger.event_time import epoch_us, outside_window
from tokenledger.identity import legacy_identity, placement_key, request_identity
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable
from tokenledger.pricing.engine import price_with_spec
from tokenledger.schema.fastdecode import InvalidEvent, decode_usage_event
from tokenledger.schema.priced import BATCH_BYTES
from tokenledger.schema.priced_arrow import encode_arrow_batches
from tokenledger.schema.raw_batch import encode_batch, partition_for, position
from tokenledger.store.records import usage_row

TABLE = CachedPriceTable(LayeredPriceTable.from_path())
TRACE = os.environ.get("TOKENLEDGER_TRACE_EVENTS") == "1"  # log every raw event's position (diagnosis)
log = logging.getLogger(__name__)
# A take of up to BATCH_MAX messages can hold far more events when producers send batches; it
# is priced in chunks of about this many bytes of raw events (~6,500 events), each made durable
# on its own, so outputs and the identity record of a chunk stay well under the broker's limits.
CHUNK_BYTES = 4 << 20

# One record per batch: "partition:first offset" -> {"ids": [[request identity, epoch s, position], ...]}.
priced_batches = durable_table(app, "priced-batches", PARTITIONS, IDENTITY_PACKING)
# Dead letters, stream estimates and duplicates seen by this agent: {"n": count}.
counters = durable_table(app, "pricing-counters", PARTITIONS)
identities = BatchIdentities(priced_batches)
outputs = AsyncProducer(SETTINGS)
_IN = metrics.EVENTS.labels("pricing", "in")
_MESSAGES_IN = metrics.MESSAGES.labels("pricing", "in")
_PRICED = metrics.EVENTS.labels("pricing", "priced")
_FORWARDED = metrics.EVENTS.labels("pricing", "forwarded")
_ESTIMATES = metrics.EVENTS.labels("pricing", "estimate")
_DUPLICATES = metrics.EVENTS.labels("pricing", "duplicate")


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode's handler type is stricter than its send
def _reindex(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Partitions moved: rebuild the identity index from the (recovered) table on next use."""
    identities.forget_index()


class Batch:
    """What one source partition's share of a batch produces, before any of it is sent."""

    def __init__(self, partition: int, group: list[Any], deltas: DeltaBatch) -> None:
        self.partition = partition
        self.group = group
        self.staged = Staged()
        self.priced: list[tuple[Any, ...]] = []  # stored rows (event_time in epoch µs)
        self.deltas = deltas  # shared by the partitions of one batch
        self.ids: dict[str, Identity] = {}
        self.usage: dict[tuple[str, str], list[int]] = {}  # (model, department) -> token kinds + cost, for metrics
        self.forward: dict[tuple[int, int], list[bytes]] = {}  # (home partition, record ms) -> events
        self.newest_ms = 0  # the newest record timestamp of the batch

    def forwards(self) -> list[tuple[bytes | None, bytes, int, int]]:
        """``(key, value, partition, timestamp ms)`` of the events to forward to their home partitions."""
        return [
            (None, encode_batch(events), home, ms) if len(events) > 1 else (None, events[0], home, ms)
            for (home, ms), events in self.forward.items()
        ]


@app.agent(raw_topic)
async def price_events(stream: Any) -> AsyncIterator[None]:
    """Price every valid, final, not yet priced request, a batch at a time."""
    seen: dict[int, int] = {}  # per source partition, since the last identity expiry there
    newest: dict[int, int] = {}  # per source partition: the newest record timestamp (ms) seen
    async for groups in batches_by_partition(stream, BATCH_MAX, BATCH_WITHIN_S):
        try:
            for chunk in byte_chunks(groups, CHUNK_BYTES):
                await _price_chunk(chunk, seen, newest)
        except Exception as exc:
            stop_worker("pricing", exc)
        yield None


async def _price_chunk(groups: dict[int, list[Any]], seen: dict[int, int], newest: dict[int, int]) -> None:
    """Price a chunk of a batch; its outputs, then its identities, are acknowledged by the broker."""
    t = SETTINGS.topics
    deltas = DeltaBatch(control_state())
    batches = [Batch(partition, group, deltas) for partition, group in groups.items()]
    for batch in batches:
        known = identities.of(batch.partition)
        with as_current(batch.group):  # a dead letter's counter goes to this partition's changelog
            for event in batch.group:
                await _price(event, batch, known)
    await asyncio.gather(  # priced events, deltas and forwards first: then the identities may say "done"
        outputs.send_all(
            t.usage_priced,
            [(None, m) for m in encode_arrow_batches([r for b in batches for r in b.priced], BATCH_BYTES)],
        ),
        outputs.send_placed(t.spend_deltas, [(None, v, p, None) for p, v in deltas.partition_messages(PARTITIONS)]),
        outputs.send_placed(t.usage_raw, [m for b in batches for m in b.forwards()]),
    )
    for batch in batches:
        partition = batch.partition
        with as_current(batch.group):
            batch.staged.at(partition, -1)  # plain records: no applied-offset stamp
            records = identities.records(batch.ids)
            for first, record in records:
                batch.staged.set(priced_batches, batch_key(partition, first), record)
            await batch.staged.commit()
            identities.remember(partition, records)
            _count(batch)
            seen[partition] = seen.get(partition, 0) + len(batch.priced)
            newest[partition] = max(newest.get(partition, 0), batch.newest_ms)
            if seen[partition] >= EXPIRE_EVERY:
                seen[partition] = 0
                # Record time, not this worker's clock: a replay expires what the first pass expired.
                for key in identities.expired(partition, newest[partition] / 1000 - DEDUP_HORIZON_S):
                    del priced_batches[key]


async def _price(event: Any, batch: Batch, known: PartitionIndex) -> None:
    """Validate, de-duplicate and price the event(s) of one raw message into ``batch``."""
    raw: bytes = event.value or b""
    offset = event.message.offset
    _MESSAGES_IN.inc()
    if TRACE:
        log.info("raw %s:%s key=%r", event.message.partition, offset, event.key)
    record_ms = _record_ms(event)
    batch.newest_ms = max(batch.newest_ms, record_ms)
    parts, broken = events_of(raw)
    if broken is not None:
        _IN.inc()
        await _dead_letter(batch, event, None, position(offset, 0), reason=broken, raw=raw)
        return
    _IN.inc(len(parts))
    single = len(parts) == 1 and parts[0] is raw
    for index, part in enumerate(parts):
        pos = position(offset, index)
        invalid = _price_one(part, pos, batch, known=known, record_ms=record_ms)
        if invalid is not None:
            await _dead_letter(batch, event, None if single else index, pos, reason=invalid, raw=part)


def _record_ms(event: Any) -> int:
    """The raw record's timestamp in epoch ms (CreateTime from its producer, or the broker's LogAppendTime)."""
    stamp = event.message.timestamp
    return round(float(stamp) * 1000) if stamp else 0


async def _dead_letter(batch: Batch, event: Any, index: int | None, pos: int, *, reason: str, raw: bytes) -> None:
    """An invalid event to the dead-letter topic, keyed by its origin (and index in a batch)."""
    value = dead_letter_value("pricing", reason, event.message, raw)
    key = origin_key(event.message)
    if index is not None:
        value["origin"]["index"] = index
        key += f"/{index}".encode()
    batch.staged.at(batch.partition, pos)
    batch.staged.output(await dead_letter_topic.send(key=key, value=value))
    batch.staged.add(counters, "dead-letter:pricing")
    metrics.EVENTS.labels("pricing", "dead_letter").inc()


def _price_one(raw: bytes, pos: int, batch: Batch, *, known: PartitionIndex, record_ms: int) -> str | None:
    """One event at position ``pos`` of its partition, from a record stamped ``record_ms`` (0: none).

    Returns why it is invalid (for the dead-letter topic), or ``None``. Not a coroutine: only a
    dead letter awaits (the caller sends it), so no coroutine object is made per event.
    """
    partition = batch.partition
    staged = batch.staged
    staged.at(partition, pos)
    try:
        ev = decode_usage_event(raw)
    except InvalidEvent as exc:
        return exc.reason
    if not ev.data.final:
        staged.add(counters, "estimates")
        _ESTIMATES.inc()
        return None
    at_us = epoch_us(ev.time)
    late = outside_window(at_us, record_ms * 1000) if record_ms > 0 else None  # a record without a timestamp: no window
    if late is not None:
        return late
    home = partition_for(placement_key(ev), PARTITIONS)
    if home != partition:  # its request's copies meet in the home partition: price it there
        batch.forward.setdefault((home, record_ms), []).append(raw)
        _FORWARDED.inc()
        return None
    request = request_identity(ev)
    remembered = batch.ids.get(request) or known.get(request)
    if remembered is None and known.legacy:
        remembered = known.get(legacy_identity(ev))  # priced before tenant scoping, within 35 days
    if remembered is not None:
        if is_repeat(remembered, partition, pos):
            staged.add(counters, "duplicates:pricing")
            _DUPLICATES.inc()
        # else this very event, replayed after a crash: priced and delivered before its identity was stored
        return None
    d = ev.data
    cost = price_with_spec(d, TABLE.lookup_at(d.provider, d.model, at_us, ev.time, batch=d.batch))
    # Sent keyless as columns (tokenledger.schema.priced_arrow): one tenant's rows spread over every sink partition.
    batch.priced.append(usage_row(ev, cost, at_us))
    nanos = cost.total_nanos
    batch.deltas.add_event(partition, pos, at_us, nanos, ev)
    batch.ids[request] = (at_us // 1_000_000, partition, pos)
    usage = batch.usage.setdefault((d.model, d.labels.department or ""), [0, 0, 0, 0, 0, 0])
    usage[0] += d.input_tokens - d.cached_read_tokens - d.cache_write_tokens
    usage[1] += d.cached_read_tokens
    usage[2] += d.cache_write_tokens
    usage[3] += d.output_tokens - d.reasoning_tokens
    usage[4] += d.reasoning_tokens
    usage[5] += nanos
    return None


_KINDS = ("input", "cached_read", "cache_write", "output", "reasoning")


def _count(batch: Batch) -> None:
    """Prometheus counters for a batch (label lookups once per model and department, not per event)."""
    for (model, department), usage in batch.usage.items():
        metrics.record_priced(model, department, dict(zip(_KINDS, usage[:5], strict=True)), usage[5])
    if batch.priced:
        _PRICED.inc(len(batch.priced))
