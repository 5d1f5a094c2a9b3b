"""confluent-kafka adapters behind the sink's narrow interfaces."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from stream_jobs.dead_letters import origin_key, origin_of, value_fields
from stream_jobs.stall_watch import StallWatch
from stream_jobs.store_sink import Message
from tokenledger import metrics
from tokenledger.errors import PermanentError, TransientError
from tokenledger.kafka_config import KafkaSettings

log = logging.getLogger(__name__)


def _debug_config() -> dict[str, object]:
    """Debug contexts for librdkafka from ``TOKENLEDGER_RDKAFKA_DEBUG`` (e.g. ``consumer,fetch``)."""
    contexts = os.environ.get("TOKENLEDGER_RDKAFKA_DEBUG")
    if not contexts:
        return {}
    logger = logging.getLogger("rdkafka")
    logger.setLevel(logging.DEBUG)  # asked for explicitly: shown whatever the process's log level
    return {"debug": contexts, "logger": logger}


# Errors no retry fixes: credentials, permissions, a broken client configuration.
_PERMANENT_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._SSL,
        KafkaError._INVALID_ARG,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)
# A commit refused because the group moved on: the partitions went to another member, which
# resumes from the last committed offset (the store is idempotent, so the replay is harmless).
_COMMIT_SUPERSEDED = frozenset(
    {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID}
)


def is_permanent(err: KafkaError) -> bool:
    """Whether a librdkafka error is one that retrying cannot fix."""
    return bool(err.fatal()) or err.code() in _PERMANENT_CODES


class ErrorWatch:
    """librdkafka ``error_cb``: counts transient errors (the client retries them) and keeps the first permanent one."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.permanent: str | None = None

    def __call__(self, err: KafkaError) -> None:
        """Record one error reported by librdkafka."""
        if is_permanent(err):
            self.permanent = self.permanent or f"{err.name()}: {err.str()}"
            log.error("%s: %s (permanent)", self.component, err.str())
            return
        metrics.TRANSIENT.labels(self.component, "broker").inc()
        log.debug("%s: %s (transient; librdkafka retries)", self.component, err.str())

    def check(self) -> None:
        """Raise the permanent error, if one came.

        Raises:
            PermanentError: Credentials, permissions or configuration are wrong.
        """
        if self.permanent:
            raise PermanentError(f"Kafka refused {self.component}: {self.permanent}")


class ConfluentBatchConsumer:
    """Manual-commit consumer of one topic (static assignment or group subscription).

    A commit waits for the broker's answer at most ``commit_timeout_s`` and then raises
    :class:`TransientError`, so the caller's retry loop backs off and commits again. (librdkafka's
    synchronous commit takes no timeout; one was seen never to return after a broker restart.)
    While waiting it serves the consumer's queue; a message that arrives then, or during a
    ``keepalive``, is held for the next :meth:`poll_batch`, never dropped.

    A consumer that is behind the end of its topic yet receives nothing is reported, not
    silently tolerated: every ``check_every_s`` of empty polls the lag is refreshed, and once it
    has stayed non-zero without a record for ``stall_after_s`` a warning names the partitions
    and ``tokenledger_consumer_stalled_seconds`` climbs (alert ``TokenledgerConsumerStalled``).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        group_id: str,
        *,
        stall_after_s: float = 60.0,
        check_every_s: float = 5.0,
        commit_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topic, self._group = topic, group_id
        self._clock = clock
        self._commit_timeout_s = commit_timeout_s
        self._held: list[Message] = []  # returned by a poll outside poll_batch, delivered next
        self._acked: dict[tuple[str, int], int] = {}  # highest offset the broker acknowledged
        self._refused: dict[tuple[str, int], tuple[int, KafkaError]] = {}  # offset and why
        self._watch = StallWatch(clock(), stall_after_s=stall_after_s, check_every_s=check_every_s)
        self.errors = ErrorWatch(f"consumer group {group_id}")
        self._consumer = Consumer(
            {
                **settings.client_config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.fetch_wait_ms,
                "error_cb": self.errors,
                "on_commit": self._on_commit,
                **_debug_config(),
            }
        )
        self._fetch_wait_ms = settings.fetch_wait_ms
        if settings.assignment == "group":
            self._consumer.subscribe([topic])
        else:
            meta = self._consumer.list_topics(topic, timeout=10)
            parts = [TopicPartition(topic, p) for p in sorted(meta.topics[topic].partitions)]
            committed = self._consumer.committed(parts, timeout=10)
            self._consumer.assign(
                [
                    TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                    for tp in committed
                ]
            )

    def poll_batch(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages (those held from an earlier poll first)."""
        out, self._held = self._held[:max_messages], self._held[max_messages:]
        if len(out) < max_messages:  # a full batch still: a few held ones must not shrink it
            for m in self._consumer.consume(max_messages - len(out), timeout_s):
                self._take(m, out)
        self.errors.check()
        now = self._clock()
        if self._watch.polled(now, len(out)):
            self._report_lag(now)
        return out

    def _take(self, m: KafkaMessage, into: list[Message]) -> None:
        err = m.error()
        if err:
            if is_permanent(err):
                self.errors(err)
            return  # partition EOF and transient fetch errors: librdkafka retries
        into.append(Message(m.topic() or "", m.partition() or 0, m.offset() or 0, m.value()))

    def _serve(self, timeout_s: float) -> None:
        """Serve callbacks (commit results, group protocol); hold a message if one comes."""
        m = self._consumer.poll(timeout_s)
        if m is not None:
            self._take(m, self._held)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key, why = (tp.topic, tp.partition), err or tp.error
            if why is not None:
                self._refused[key] = (tp.offset, why)
            elif tp.offset >= 0 and tp.offset > self._acked.get(key, -1):
                self._acked[key] = tp.offset

    def _report_lag(self, now: float) -> None:
        lag = self.lag()
        stalled_s, report = self._watch.lag_is(now, lag)
        metrics.CONSUMER_LAG.labels(self._group, self._topic).set(lag)
        metrics.CONSUMER_STALLED.labels(self._group, self._topic).set(stalled_s)
        if report:
            log.warning(
                "%s is %d messages behind on %s but has received nothing for %.0f s (positions %s); "
                "check the broker's fetch answers (fetch.wait.max.ms=%s)",
                self._group,
                lag,
                self._topic,
                stalled_s,
                {tp.partition: tp.offset for tp in self._consumer.position(self._consumer.assignment())},
                self._fetch_wait_ms,
            )

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit and wait for the broker's answer, at most ``commit_timeout_s``.

        Raises:
            TransientError: The coordinator is away or did not answer in time; retry the same commit.
            PermanentError: Credentials or permissions are wrong.
        """
        for key in offsets:  # answers to this commit only (offsets may have been reset backwards)
            self._refused.pop(key, None)
            self._acked.pop(key, None)
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=True)
        except KafkaException as exc:
            err = exc.args[0]
            if not isinstance(err, KafkaError):
                raise
            self._raise_refused(err, exc)
            return
        deadline = self._clock() + self._commit_timeout_s
        while not all(self._acked.get(key, -1) >= o for key, o in offsets.items()):
            refused = self._refusal(offsets)
            if refused is not None:
                self._raise_refused(refused, None)
                return
            if self._clock() >= deadline:
                raise TransientError(f"commit not answered within {self._commit_timeout_s:g} s")
            self._serve(0.002)  # a served callback does not end a poll: only a message or the timeout does
        metrics.CONSUMER_LAG.labels(self._group, self._topic).set(self.lag())
        metrics.CONSUMER_STALLED.labels(self._group, self._topic).set(0)

    def _refusal(self, offsets: dict[tuple[str, int], int]) -> KafkaError | None:
        """Why this commit was refused, if it was (a late refusal of an older commit is not)."""
        for key, offset in offsets.items():
            refused = self._refused.get(key)
            if refused is not None and refused[0] >= offset:
                return refused[1]
        return None

    @staticmethod
    def _raise_refused(err: KafkaError, cause: BaseException | None) -> None:
        """Classify a refused commit: superseded (returns), permanent or transient (raise)."""
        if err.code() in _COMMIT_SUPERSEDED:
            log.info("commit superseded by a rebalance (%s); the new owner replays from the last commit", err.str())
            return
        if is_permanent(err):
            raise PermanentError(f"Kafka refused the commit: {err.str()}") from cause
        raise TransientError(f"commit not acknowledged: {err.str()}") from cause

    def lag(self) -> int:
        """Messages between this consumer's position and the ends of its assigned partitions.

        Before the first record of a partition arrives its position is unknown; counting from the
        log start then keeps a consumer that never receives anything visibly behind.
        """
        total = 0
        for tp in self._consumer.position(self._consumer.assignment()):
            low, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            start = tp.offset if tp.offset >= 0 else max(low, 0)
            if high >= 0:
                total += max(0, high - start)
        return total

    def pause(self) -> None:
        """Pause every assigned partition."""
        self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        """Resume every assigned partition."""
        self._consumer.resume(self._consumer.assignment())

    def keepalive(self) -> None:
        """Serve callbacks and group heartbeats while paused.

        A message of a partition assigned meanwhile (hence not paused) is held for the next batch.
        """
        self._serve(0)

    def close(self) -> None:
        """Leave cleanly."""
        self._consumer.close()


class KafkaDeadLetter:
    """Dead letters as JSON ``{reason, origin, value}``, keyed ``topic/partition/offset`` of the origin.

    ``value`` is the first 64 KiB of the message as text, or ``value_base64`` when it is not
    UTF-8, with ``value_bytes``, its full size (``stream_jobs.dead_letters.value_fields``).

    Flushed before the batch commits (at least once: a replay after a crash repeats the key).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._topic = settings.topics.dead_letter
        # Idempotent: a batch retried after a lost acknowledgement is not written twice.
        self._producer = Producer(settings.producer_config())
        self.errors: list[str] = []

    def send(self, value: bytes | None, reason: str, origin: Message) -> None:
        """Publish one dead letter and wait for the broker's acknowledgement."""
        body = orjson.dumps({"reason": reason, "origin": origin_of(origin), **value_fields(value or b"")})
        self._producer.produce(self._topic, body, key=origin_key(origin), on_delivery=self._on_delivery)
        if self._producer.flush(10) > 0 or self.errors:
            errors, self.errors = self.errors, []
            raise TransientError(f"dead letter not acknowledged: {errors or 'timed out'}")

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self.errors.append(str(err))
