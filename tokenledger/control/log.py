"""The control topic: every process follows it; the billing service and ``billing control`` write it.

Follows the design of Confluent Schema Registry's ``KafkaStore`` and Karapace's schema reader:

* one partition, compacted, keyed ``<kind>/<id>`` (:mod:`tokenledger.control.records`); a delete
  is a null value (a tombstone), so compaction keeps the latest record of every live id;
* a reader thread assigns the partition from the beginning and never commits: a (re)started
  process replays the whole topic and holds the same state as before (``ready`` once it has
  read up to the end it saw when it started);
* a write is a Kafka transaction holding the record and its audit record (topic
  ``control-audit``: who, what, when, before and after), so a change never lands without its
  audit or the other way round; the writer then waits until its own reader has applied the
  record (read your writes).

Concurrent writers need no election: ids are chosen by the caller (budgets, tenants) or random
(keys), and two writes of one id are ordered by the partition (the last one wins, as an HTTP
PUT does).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from pydantic import BaseModel

from tokenledger.control.records import encode, record_key, to_doc
from tokenledger.control.state import Change, ControlState
from tokenledger.errors import TransientError
from tokenledger.kafka_config import KafkaSettings
from tokenledger.kafka_logs import RDKAFKA

log = logging.getLogger("tokenledger.control")
Listener = Callable[[Change], None]


class ControlUnavailable(TransientError):
    """The control topic could not be read or written in time."""


class ControlLog:
    """Follows the control topic into a :class:`ControlState` (a daemon thread)."""

    def __init__(
        self, settings: KafkaSettings, state: ControlState | None = None, kinds: frozenset[str] | None = None
    ) -> None:
        self.settings = settings
        self.state = state or ControlState(kinds=kinds)
        self.ready = threading.Event()
        self.applied = -1  # offset of the last record applied
        self._cond = threading.Condition()
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-log", daemon=True)
        self.failure: str | None = None

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` (on the reader thread) with every change applied from now on."""
        self._listeners.append(listener)

    def start(self, wait_s: float = 30.0) -> ControlLog:
        """Start following; block until caught up.

        Raises:
            ControlUnavailable: Not caught up within ``wait_s``.
        """
        self._thread.start()
        if not self.ready.wait(wait_s):
            why = self.failure or "broker unreachable"
            topic = self.settings.topics.control
            raise ControlUnavailable(f"control topic {topic!r} not read in {wait_s:.0f} s: {why}")
        return self

    def wait_applied(self, offset: int, timeout_s: float = 10.0) -> bool:
        """Whether the reader applied ``offset`` within ``timeout_s``."""
        with self._cond:
            return self._cond.wait_for(lambda: self.applied >= offset, timeout_s)

    def close(self) -> None:
        """Stop the reader thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        topic = self.settings.topics.control
        consumer = Consumer(
            {
                **self.settings.client_config(),
                "group.id": f"control-reader-{uuid.uuid4().hex}",  # never commits: always reads all
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # The broker answers as soon as a change arrives: the wait only bounds idle round
                # trips (every worker, gateway and billing process runs one of these readers).
                "fetch.wait.max.ms": self.settings.fetch_wait_ms,
                "logger": RDKAFKA,
            }
        )
        tp = TopicPartition(topic, 0)
        try:
            end = self._end(consumer, tp)
            consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            while not self._stop.is_set():
                msgs = consumer.consume(1000, 0.1)
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self.failure = err.str()
                        continue
                    self._apply(msg.key(), msg.value(), msg.offset() or 0)
                if not self.ready.is_set():
                    position = consumer.position([tp])[0].offset
                    if end == 0 or (position is not None and position >= end):
                        self.ready.set()
        except KafkaException as exc:
            self.failure = str(exc)
            log.error("control topic %s: %s", topic, exc)
        finally:
            consumer.close()

    def _end(self, consumer: Consumer, tp: TopicPartition) -> int:
        """The end offset at start (retried until the broker answers)."""
        while not self._stop.is_set():
            try:
                return int(consumer.get_watermark_offsets(tp, timeout=5.0)[1])
            except KafkaException as exc:
                self.failure = str(exc)
                time.sleep(0.5)
        return 0

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        change = self.state.apply((key or b"").decode(errors="replace"), value, offset)
        with self._cond:
            self.applied = offset
            self._cond.notify_all()
        if change is not None:
            for listener in self._listeners:
                try:
                    listener(change)
                except Exception:  # a listener's bug must not stop the control plane
                    log.exception("control listener failed on %s/%s", change.kind, change.id)


class ControlWriter:
    """Writes records and their audit in one transaction, then waits until ``log`` applied them."""

    def __init__(self, settings: KafkaSettings, control: ControlLog, timeout_s: float = 10.0) -> None:
        self.settings, self.control, self.timeout_s = settings, control, timeout_s
        self._lock = threading.Lock()
        self._producer = Producer(self._producer_config())
        self._ready = False

    def write(self, changes: list[tuple[str, str, BaseModel | None]], *, actor: str, action: str) -> int:
        """Write ``(kind, id, record or None for a delete)`` records atomically; the last offset.

        Raises:
            ControlUnavailable: The broker did not take the transaction, or the reader did not apply it in time.
        """
        if not changes:
            return self.control.applied
        offsets: list[int] = []

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is None and msg.topic() == self.settings.topics.control:
                offsets.append(msg.offset())

        at = datetime.now(UTC).isoformat()
        with self._lock:
            try:
                if not self._ready:
                    self._producer.init_transactions(self.timeout_s)
                    self._ready = True
                self._producer.begin_transaction()
                for kind, rid, record in changes:
                    key = record_key(kind, rid).encode()
                    before = self._before(kind, rid)
                    value = None if record is None else encode(record)
                    self._producer.produce(self.settings.topics.control, value, key, on_delivery=delivered)
                    audit = {
                        "at": at,
                        "actor": actor,
                        "action": action,
                        "kind": kind,
                        "id": rid,
                        "before": before,
                        "after": None if record is None else to_doc(record),
                    }
                    self._producer.produce(self.settings.topics.control_audit, orjson.dumps(audit), key)
                self._producer.commit_transaction(self.timeout_s)
            except KafkaException as exc:
                self._abort()
                raise ControlUnavailable(f"control write not acknowledged: {exc}") from exc
        last = max(offsets) if offsets else self.control.applied
        if not self.control.wait_applied(last, self.timeout_s):
            raise ControlUnavailable(f"control record {last} written but not read back within {self.timeout_s:.0f} s")
        return last

    def _before(self, kind: str, rid: str) -> Any:
        s = self.control.state
        found = s.defaults if kind == "defaults" else s.table(kind).get(rid)
        return None if found is None else to_doc(found)

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction(self.timeout_s)
        except KafkaException:
            self._ready = False  # a fatal producer state: start over on the next write
            self._producer = Producer(self._producer_config())

    def _producer_config(self) -> dict[str, Any]:
        return {
            **self.settings.producer_config(),
            "transactional.id": f"tokenledger-control-{uuid.uuid4().hex}",
            "linger.ms": 0,
        }

    def close(self) -> None:
        """Flush what is pending."""
        self._producer.flush(5)
