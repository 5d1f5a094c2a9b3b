"""Agent: raw usage events -> priced events. Validates, de-duplicates, prices.

* invalid events go to the dead-letter topic with the reason, and are counted;
* running estimates of a stream (``final=false``) are counted but not billed: a request is
  billed once, at its final figure;
* a request is priced once: ``source|request_id`` is remembered for 35 days (more than a
  month, so redeliveries across a month boundary are still caught);
* priced events are keyed by tenant, so each tenant's budget state lives in one partition;
* events come in batches: a batch's priced events are sent together and all acknowledged by
  the broker before the identities are remembered (and acknowledged by the broker in turn),
  and only then are the raw events acknowledged. After a crash, a raw event that finds its own
  identity (same partition and offset) was already priced and delivered: it is skipped, not
  counted as a duplicate; one whose identity is missing is priced again to the same priced
  event (same ``(source, id)``), which the spend agent and the store count once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from stream_jobs.app import (
    BATCH_MAX,
    BATCH_WITHIN_S,
    DEDUP_HORIZON_S,
    PARTITIONS,
    app,
    dead_letter_topic,
    priced_topic,
    raw_topic,
)
from stream_jobs.batches import Staged, partition_batches
from stream_jobs.dead_letters import dead_letter_value, origin_key
from stream_jobs.durable_table import durable_table
from stream_jobs.identities import EXPIRE_EVERY, expire_identities, identity_value, is_repeat
from tokenledger import metrics
from tokenledger.batch_pricing import request_identity
from tokenledger.pricing import CachedPriceTable, LayeredPriceTable, price
from tokenledger.schema.fastdecode import InvalidEvent, decode_usage_event
from tokenledger.schema.priced import encode_priced

TABLE = CachedPriceTable(LayeredPriceTable.from_path())
TRACE = os.environ.get("TOKENLEDGER_TRACE_EVENTS") == "1"  # log every raw event's position (diagnosis)
log = logging.getLogger(__name__)

# Request identities already priced: source|request_id -> [event epoch s, source partition, offset].
priced_requests = durable_table(app, "priced-requests", PARTITIONS)
# Dead letters, stream estimates and duplicates seen by this agent: {"n": count}.
counters = durable_table(app, "pricing-counters", PARTITIONS)


async def deliver(key: bytes, value: bytes) -> None:
    """Send a priced event and wait for the broker's acknowledgement, retrying until it comes.

    Faust acks the raw event (and later commits its offset) once the agent moves on; a
    fire-and-forget send that fails while the broker is away would then be lost. Waiting
    for the delivery keeps the raw offset uncommitted until the priced event is stored.
    """
    delay = 0.1
    while True:
        try:
            fut = await priced_topic.send(key=key, value=value)
            await fut
            return
        except Exception as exc:
            log.warning("priced event not acknowledged (%r); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def deliver_all(messages: list[tuple[bytes, bytes]]) -> None:
    """Send a batch of priced events at once and wait until the broker acknowledged every one.

    Sends are pipelined (one round trip for the batch, not one per event); any that fail
    are retried one by one with :func:`deliver`. The batch's raw events are acknowledged
    only afterwards.
    """
    futures: list[Any] = []
    for key, value in messages:
        try:
            futures.append(await priced_topic.send(key=key, value=value))
        except Exception:  # the producer refused it outright: retry below
            futures.append(None)
    outcomes = await asyncio.gather(*(f for f in futures if f is not None), return_exceptions=True)
    results = iter(outcomes)
    for (key, value), fut in zip(messages, futures, strict=True):
        if fut is None or isinstance(next(results), BaseException):
            await deliver(key, value)


@app.agent(raw_topic)
async def price_events(stream: Any) -> AsyncIterator[None]:
    """Price every valid, final, not yet priced request, a batch at a time."""
    seen: dict[int, int] = {}  # per source partition, since the last identity expiry there
    async for partition, group in partition_batches(stream, BATCH_MAX, BATCH_WITHIN_S):
        staged, outbox = Staged(), list[tuple[bytes, bytes]]()
        for event in group:
            await _price(event, staged, outbox)
        await deliver_all(outbox)  # before the identities are remembered
        await staged.commit()
        seen[partition] = seen.get(partition, 0) + len(outbox)
        if seen[partition] >= EXPIRE_EVERY:
            seen[partition] = 0
            expire_identities(priced_requests, partition, time.time() - DEDUP_HORIZON_S)
        yield None


async def _price(event: Any, staged: Staged, outbox: list[tuple[bytes, bytes]]) -> None:
    """Validate, de-duplicate and price one raw event (identity into ``staged``, priced event into ``outbox``)."""
    raw: bytes = event.value or b""
    partition, offset = event.message.partition, event.message.offset
    staged.at(partition, offset)
    metrics.EVENTS.labels("pricing", "in").inc()
    if TRACE:
        log.info("raw %s:%s key=%r", event.message.partition, event.message.offset, event.key)
    try:
        ev = decode_usage_event(raw)
    except InvalidEvent as exc:
        staged.output(
            await dead_letter_topic.send(
                key=origin_key(event.message), value=dead_letter_value("pricing", exc.reason, event.message, raw)
            )
        )
        staged.add(counters, "dead-letter:pricing")
        metrics.EVENTS.labels("pricing", "dead_letter").inc()
        return
    if not ev.data.final:
        staged.add(counters, "estimates")
        metrics.EVENTS.labels("pricing", "estimate").inc()
        return
    request = request_identity(ev)
    remembered = staged.get(priced_requests, request)
    if is_repeat(remembered, partition, offset):
        staged.add(counters, "duplicates:pricing")
        metrics.EVENTS.labels("pricing", "duplicate").inc()
        return
    if remembered is not None:
        return  # this very event, replayed after a crash: priced and delivered before its identity was stored
    cost = price(ev.data, ev.time, TABLE)
    outbox.append((ev.data.labels.tenant.encode(), encode_priced(ev, cost)))
    d = ev.data
    tokens = {
        "input": d.input_tokens - d.cached_read_tokens - d.cache_write_tokens,
        "cached_read": d.cached_read_tokens,
        "cache_write": d.cache_write_tokens,
        "output": d.output_tokens - d.reasoning_tokens,
        "reasoning": d.reasoning_tokens,
    }
    metrics.record_priced(d.model, d.labels.department or "", tokens, cost.total_nanos)
    metrics.EVENTS.labels("pricing", "priced").inc()
    staged.set(priced_requests, request, identity_value(int(ev.time.timestamp()), partition, offset))
