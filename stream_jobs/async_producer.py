"""A confluent-kafka producer for asyncio agents: batched sends whose acknowledgements can be awaited.

Faust's own send path costs ~50-100 µs of Python per message (measured with py-spy on the
pricing worker); librdkafka batches in C for a few µs. The pricing agent sends one priced event
per request and one spend delta per touched key per batch, so its outputs go through this
producer. A background thread serves librdkafka's delivery reports and resolves each send's
future on the event loop; the agent awaits a whole batch's futures before it records the batch
as done, so a committed offset never covers an output that is not on the broker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer

from tokenledger.errors import PermanentError
from tokenledger.kafka_config import KafkaSettings

log = logging.getLogger(__name__)
Placed = tuple[bytes | None, bytes, int | None, int | None]  # key, value, partition, timestamp ms


class AsyncProducer:
    """``send_all`` returns when the broker acknowledged every record given."""

    def __init__(self, settings: KafkaSettings, linger_ms: int = 5) -> None:
        self._producer = Producer(
            {
                **settings.producer_config(),
                "linger.ms": linger_ms,
                "batch.size": 1_000_000,
                # Java's partitioner (murmur2 of the key), the one aiokafka and Faust use: a key
                # lands where a Faust worker computing its partition expects it.
                "partitioner": "murmur2_random",
            }
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._serve, name="async-producer", daemon=True)
            self._thread.start()
        return self._loop

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send_all(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Send ``records`` pipelined and wait until every one is acknowledged, retrying failures.

        One future per call, not per record: the delivery thread counts acknowledgements and
        wakes the event loop once, when the last one arrived.
        """
        await self.send_placed(topic, [(key, value, None, None) for key, value in records])

    async def send_placed(self, topic: str, records: Sequence[Placed]) -> None:
        """:meth:`send_all` of ``(key, value, partition or None, timestamp ms or None)`` records."""
        if not records:
            return
        loop = self._ensure_started()
        pending = list(records)
        delay = 0.1
        while pending:
            failed = await self._send_once(loop, topic, pending)
            if not failed:
                return
            log.warning("%d records to %s not acknowledged; retrying in %.1fs", len(failed), topic, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            pending = failed

    async def _send_once(self, loop: asyncio.AbstractEventLoop, topic: str, records: list[Placed]) -> list[Placed]:
        """Produce each record once; the ones whose delivery failed."""
        if not records:
            return []
        done: asyncio.Future[None] = loop.create_future()
        failed: list[Placed] = []
        left = [len(records)]
        lock = threading.Lock()

        def on_delivery(record: Placed) -> Any:
            def delivered(err: Any, _msg: Any) -> None:  # on the delivery thread
                with lock:
                    if err is not None:
                        failed.append(record)
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    loop.call_soon_threadsafe(_settle, done)

            return delivered

        for record in records:
            key, value, partition, timestamp = record
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value,
                        key,
                        partition=-1 if partition is None else partition,  # -1: librdkafka's partitioner
                        timestamp=timestamp or 0,  # 0: now
                        on_delivery=on_delivery(record),
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    await asyncio.sleep(0.01)
                except KafkaException as exc:  # refused outright (e.g. too large): a permanent error
                    raise PermanentError(f"cannot produce to {topic}: {exc}") from exc
        await done
        return failed

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``) and stop the delivery thread."""
        self._producer.flush(timeout_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
