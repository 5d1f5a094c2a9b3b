"""Gateway client: follow the compacted ``breakers`` topic into a :class:`~tokenledger.guard.Guard`.

On start it reads every partition from the beginning up to its end offset (the latest state of
every budget; compaction keeps it short) and only then reports ready. A background thread
keeps following the topic and probes the broker once a second, so the guard knows how fresh
its feed is (fail-open / fail-closed). Decisions never touch the network: ``decide`` is a
dictionary scan under a lock.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from tokenledger.guard import BreakerView, Decision, Guard, GuardRequest
from tokenledger.kafka_config import KafkaSettings

Listener = Callable[[BreakerView | None, float], None]


class BreakerClient:
    """Consumes breakers in a thread; answers ``decide`` from memory."""

    def __init__(
        self,
        settings: KafkaSettings,
        guard: Guard,
        *,
        probe_every_s: float = 1.0,
        listener: Listener | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Create the client (call :meth:`start`).

        Args:
            settings: Broker and topic names.
            guard: Decision state to feed.
            probe_every_s: How often the broker is probed for feed freshness.
            listener: Called with every breaker received and its monotonic receive time.
            rng: Source of the throttle rule's draws (seeded in tests).
        """
        self.settings, self.guard = settings, guard
        self._probe_every = probe_every_s
        self._listener = listener
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="breaker-client", daemon=True)
        self.received = 0

    def start(self, wait_s: float = 30.0) -> BreakerClient:
        """Start following; block until bootstrapped (or ``wait_s``, then fail-open/closed rules apply)."""
        self._thread.start()
        self.ready.wait(wait_s)
        return self

    def decide(self, req: GuardRequest, now: datetime) -> Decision:
        """Decide one request (see :mod:`tokenledger.guard` for the rules)."""
        return self.guard.decide(req, now, time.monotonic(), self._rng.random())

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        topic = self.settings.topics.breakers
        consumer = Consumer(
            {
                **self.settings.client_config(),
                "group.id": f"breaker-client-{uuid.uuid4().hex}",  # never commits: always reads all
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        try:
            parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
            consumer.assign(tps)
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
            positions = dict.fromkeys(parts, 0)
            next_probe = 0.0
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.05):
                    if msg.error():
                        continue
                    now = time.monotonic()
                    key = (msg.key() or b"").decode()
                    value = msg.value()
                    view = self.guard.apply(orjson.loads(value) if value else None, key, now)
                    self.received += 1
                    positions[msg.partition() or 0] = (msg.offset() or 0) + 1
                    if self._listener is not None:
                        self._listener(view, now)
                if not self.ready.is_set() and all(positions[p] >= ends[p] for p in parts):
                    self.guard.bootstrapped = True
                    self.guard.touch(time.monotonic())
                    self.ready.set()
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self._probe_every
                    self._probe(consumer, topic, parts[0])
        finally:
            consumer.close()

    def _probe(self, consumer: Consumer, topic: str, partition: int) -> None:
        """A broker round trip proves the feed is alive even when no breaker changes."""
        try:
            consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=1.0, cached=False)
        except KafkaException:
            return
        self.guard.touch(time.monotonic())
