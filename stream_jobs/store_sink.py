"""Store sink: priced events from Kafka into ClickHouse in batches.

Guarantees:
* offsets are committed only after the store acknowledged the insert of every message
  up to them (at-least-once delivery into the store);
* redelivered or duplicated events are harmless: rows are idempotent by ``(tenant, source, event_id)``
  (insert-block de-duplication plus ReplacingMergeTree and FINAL reads);
* while the store or the broker is away the sink pauses its partitions, keeps its group
  membership alive and retries with capped exponential backoff (counted in
  ``tokenledger_transient_errors_total``): nothing is dropped, nothing is skipped;
* a permanent error (schema missing, credentials refused) is raised, never retried;
* a message (or a line of a v2 batch message) that is not a priced event, or a v3 message that
  is not a valid batch of rows, goes to the dead-letter topic with the reason, and its offset is
  committed with the batch;
* an outage of the store or the broker is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import pyarrow as pa

from tokenledger import metrics
from tokenledger.errors import TransientError
from tokenledger.outage import Outage, OutageLog
from tokenledger.schema.priced import PRICED_ROWS_PREFIX, decode_row, priced_items, v1_as_row
from tokenledger.schema.priced_arrow import PRICED_ARROW_PREFIX, InvalidPricedBatch, decode_arrow_batch
from tokenledger.store.base import Store
from tokenledger.store.records import USAGE_COLUMNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """The parts of a Kafka message the sink needs."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class BatchConsumer(Protocol):
    """A Kafka consumer with manual commits."""

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s``."""
        ...

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Synchronously commit ``{(topic, partition): next_offset}``."""
        ...

    def pause(self) -> None:
        """Stop fetching (keep group membership)."""
        ...

    def resume(self) -> None:
        """Fetch again."""
        ...

    def keepalive(self) -> None:
        """Serve the group protocol while paused (e.g. ``poll(0)``)."""
        ...


class DeadLetter(Protocol):
    """Where invalid messages go, with their reason."""

    def send(self, value: bytes | None, reason: str, origin: Message) -> None:
        """Publish one dead letter (must be durable before the batch commits)."""
        ...


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter."""

    base_s: float = 0.2
    cap_s: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Delay before the next retry."""
        self.attempt += 1
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (self.attempt - 1)))

    def reset(self) -> None:
        """After a success."""
        self.attempt = 0


class SinkStopped(Exception):
    """Asked to stop while a batch waited for the store: the batch stays uncommitted (replayed later)."""


@dataclass
class SinkStats:
    """Counters (exported as metrics by the worker)."""

    batches: int = 0
    rows: int = 0
    dead_lettered: int = 0
    retries: int = 0


# A ClickHouse part insert has a fixed cost (chdb here: ~10 ms of CPU, mostly creating the
# part's files), so the sink's CPU per row falls with the batch: 15.5 µs at 2,000 rows an
# insert, 12.8 at 5,000, 8.4 at 20,000 (README). ClickHouse's own advice is 10,000-100,000
# rows and about one insert a second; the wait bounds how stale the store can be.
DEFAULT_BATCH_ROWS = 20_000
DEFAULT_BATCH_WAIT_S = 0.5


class StoreSink:
    """Consume priced events and write them to ``usage_events``."""

    def __init__(
        self,
        store: Store,
        consumer: BatchConsumer,
        dead_letter: DeadLetter,
        *,
        batch_size: int = DEFAULT_BATCH_ROWS,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        sleep: Callable[[float], None] | None = None,
        backoff: Backoff | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        broker_outage: OutageLog | None = None,
    ) -> None:
        self._store = store
        self._consumer = consumer
        self._dlq = dead_letter
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_s
        self._sleep = sleep or time.sleep
        self._backoff = backoff or Backoff()
        self._should_stop = should_stop
        self.stats = SinkStats()
        self.beat = time.monotonic()  # when a step last began: the live check's proof of progress
        self._per_message = 1.0  # priced events per message, as seen lately (batches hold ~2,000)
        self._outages: dict[str, OutageLog] = {
            "store": Outage("store", "", "the sink pauses and retries with backoff", logger=log),
            # The process's own broker outage if it has one (quiet.py): one outage, said once.
            "broker": broker_outage or Outage("broker", "", "the sink pauses and retries with backoff", logger=log),
        }

    def run_once(self) -> int:
        """Process one batch end to end. Returns the number of messages consumed.

        A message holds the rows of ~2,000 priced events as Arrow columns (v3,
        ``tokenledger.schema.priced_arrow``), or, from earlier releases, JSON lines of them or one
        priced event (``tokenledger.schema.priced``); the poll asks for about ``batch_size``
        events' worth of messages.

        Raises:
            SinkStopped: Asked to stop while the store or broker was away (nothing committed).
            PermanentError: The store or broker refused for a reason retrying cannot fix.
        """
        self.beat = time.monotonic()
        want = max(1, min(self._batch_size, round(self._batch_size / self._per_message)))
        messages = self._consumer.poll_batch(want, self._batch_wait_s)
        if not messages:
            return 0
        rows: list[bytes] = []  # JSONCompactEachRow lines, as the pricing agent wrote them (v2)
        tables: list[pa.Table] = []  # v3 messages: the rows as columns, checked, inserted as they are
        seen: set[tuple[str, str, str]] = set()
        events = 0
        for msg in messages:
            if msg.value is not None and msg.value.startswith(PRICED_ARROW_PREFIX):
                try:
                    table = decode_arrow_batch(msg.value)
                except InvalidPricedBatch as exc:
                    events += 1  # its rows cannot be counted: the message counts as one
                    self._dead_letter(msg.value, f"not a priced batch: {exc}", msg)
                    continue
                events += table.num_rows
                # The store collapses duplicates ((tenant, source, event_id), ReplacingMergeTree):
                # rows are not checked against each other one by one.
                tables.append(table)
                continue
            items = priced_items(msg.value) if msg.value else [b""]
            rows_v2 = msg.value is not None and msg.value.startswith(PRICED_ROWS_PREFIX)  # else v1 events
            events += len(items)
            for i, item in enumerate(items):
                try:
                    if not item:
                        raise msgspec.ValidationError("empty message value")
                    if rows_v2:
                        identity, line = decode_row(item).identity, item
                    else:
                        identity, line = v1_as_row(item)
                except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                    where = f" (line {i + 1} of a batch of {len(items)})" if len(items) > 1 else ""
                    self._dead_letter(item or msg.value, f"not a priced event{where}: {exc}", msg)
                    continue
                if identity in seen:
                    continue  # duplicate inside the batch; the store would collapse it anyway
                seen.add(identity)
                rows.append(line)
        self._per_message = max(1.0, 0.8 * self._per_message + 0.2 * events / len(messages))
        started = time.monotonic()
        columns = pa.concat_tables(tables) if tables else None
        self._until_done("store", lambda: self._insert(rows, columns))
        offsets = _next_offsets(messages)
        self._until_done("broker", lambda: self._consumer.commit(offsets))
        metrics.SINK_BATCH.observe(time.monotonic() - started)
        metrics.MESSAGES.labels("sink", "in").inc(len(messages))
        metrics.EVENTS.labels("sink", "in").inc(events)
        stored = len(rows) + (columns.num_rows if columns is not None else 0)
        metrics.EVENTS.labels("sink", "stored").inc(stored)
        self.stats.batches += 1
        self.stats.rows += stored
        return len(messages)

    def _insert(self, lines: list[bytes], columns: pa.Table | None) -> None:
        """Both forms of one batch; a retry repeats both (rows are idempotent in the store)."""
        if columns is not None:
            self._store.insert_arrow("usage_events", columns)
        if lines or columns is None:
            self._store.insert_lines("usage_events", USAGE_COLUMNS, lines)

    def _dead_letter(self, value: bytes | None, reason: str, origin: Message) -> None:
        self._until_done("broker", lambda: self._dlq.send(value, reason, origin))
        self.stats.dead_lettered += 1
        metrics.EVENTS.labels("sink", "dead_letter").inc()

    def _until_done(self, kind: str, action: Callable[[], None]) -> None:
        """Run ``action`` until it succeeds, backing off while ``kind`` (store/broker) is away.

        Fetching pauses meanwhile (group membership is kept). Permanent errors propagate. The
        outage is logged when it starts and when it ends; retries in between only count.
        """
        paused = False
        outage = self._outages[kind]
        while True:
            self.beat = time.monotonic()
            try:
                action()
            except TransientError as exc:
                if self._should_stop():
                    raise SinkStopped(str(exc)) from exc
                if not paused:
                    self._consumer.pause()
                    paused = True
                delay = self._backoff.next_delay()
                self.stats.retries += 1
                metrics.TRANSIENT.labels("sink", kind).inc()
                outage.down(exc)
                self._sleep(delay)
                self._consumer.keepalive()
                continue
            break
        outage.up()
        self._backoff.reset()
        if paused:
            self._consumer.resume()


def _next_offsets(messages: Sequence[Message]) -> dict[tuple[str, int], int]:
    """The commit position per partition: one past the highest offset seen."""
    out: dict[tuple[str, int], int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        out[key] = max(out.get(key, 0), m.offset + 1)
    return out
