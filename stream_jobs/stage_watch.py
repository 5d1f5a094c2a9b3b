"""Notices a pipeline stage that nobody consumes: every worker of it died or was never started.

A dead pricing or spend worker does not stop the sink (it simply receives nothing new), so
the process that stays up (the billing service with its sink, or the standalone sink) asks
the cluster every ``every_s`` whether each stage's consumer group still has members. A stage
with no member while events wait for it, on two checks in a row (one empty look is a
rebalance or a broker restart in progress), is logged once (and again when it recovers) and
exported as ``tokenledger_stage_unconsumed_events{stage}`` (alert
``TokenledgerStageUnconsumed``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tokenledger import metrics
from tokenledger.kafka_config import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """A stage: the consumer groups that may run it (Faust's per-role id or the all-in-one id) and its input."""

    name: str
    groups: tuple[str, ...]
    topic: str


def pipeline_stages(settings: KafkaSettings, app_id: str = "tokenledger") -> list[Stage]:
    """The two worker stages of the pipeline under Faust application id ``app_id``."""
    t = settings.topics
    return [
        Stage("pricing", (f"{app_id}-pricing", app_id), t.usage_raw),
        Stage("spend", (f"{app_id}-spend", app_id), t.spend_deltas),
    ]


class StageWatch:
    """Checks each stage's members and backlog; :meth:`run` does it on a timer until ``stop``."""

    def __init__(self, settings: KafkaSettings, stages: list[Stage], every_s: float = 15.0) -> None:
        self._settings, self._stages, self._every_s = settings, stages, every_s
        self._empty_checks: dict[str, int] = {}
        self._warned: set[str] = set()
        self._admin = AdminClient(settings.client_config())
        self.unconsumed: dict[str, int] = {}

    def active_groups(self) -> set[str]:
        """Groups that have members (any state but Empty and Dead).

        ``list_consumer_groups`` asks every broker (ListGroups). The coordinator-targeted admin
        calls (``describe_consumer_groups``, ``list_consumer_group_offsets``) are avoided on
        purpose: librdkafka frees their request state on a dropped coordinator connection and
        then aborts the process (``rd_kafka_enq_once_del_source_return: Assertion
        'eonce->refcnt > 0' failed``, confluentinc/librdkafka#4605, fix proposed in #5397, in no
        release). In the billing service chdb's signal handler caught that abort and the store
        then refused every query.
        """
        listed = self._admin.list_consumer_groups(request_timeout=10).result()
        idle = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD}
        return {g.group_id for g in listed.valid if g.state not in idle}

    def backlog(self, stage: Stage) -> int:
        """Events of the stage's topic that none of its groups has committed."""
        best = None
        for group in stage.groups:
            c = Consumer({**self._settings.client_config(), "group.id": group, "enable.auto.commit": False})
            try:
                meta = c.list_topics(stage.topic, timeout=10).topics[stage.topic]
                parts = [TopicPartition(stage.topic, p) for p in meta.partitions]
                end = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
                done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
            finally:
                c.close()
            best = end - done if best is None else min(best, end - done)
        return best or 0

    def check(self) -> dict[str, int]:
        """``{stage: events waiting}`` for each stage without any consumer; logs transitions."""
        found: dict[str, int] = {}
        active = self.active_groups()
        for stage in self._stages:
            waiting = 0
            if not active.intersection(stage.groups):
                waiting = self.backlog(stage)
            metrics.STAGE_UNCONSUMED.labels(stage.name).set(waiting)
            looks = self._empty_checks[stage.name] = self._empty_checks.get(stage.name, 0) + 1 if waiting else 0
            if looks == 2:  # the second empty look in a row: not a rebalance or a broker restart in progress
                self._warned.add(stage.name)
                log.warning(
                    "no %s worker is consuming %s (groups %s have no members) and %d events wait: "
                    "start `TOKENLEDGER_AGENTS=%s python -m stream_jobs worker`",
                    stage.name,
                    stage.topic,
                    "/".join(stage.groups),
                    waiting,
                    stage.name,
                )
            elif not waiting and stage.name in self._warned:
                self._warned.discard(stage.name)
                log.info("%s stage is consumed again", stage.name)
            if waiting:
                found[stage.name] = waiting
        self.unconsumed = found
        return found

    def run(self, stop: threading.Event, on_error: Callable[[Exception], None] | None = None) -> None:
        """Check every ``every_s`` until ``stop`` (a broker away is skipped, not fatal)."""
        while not stop.wait(self._every_s):
            try:
                self.check()
            except (KafkaException, KeyError) as exc:
                metrics.TRANSIENT.labels("stage-watch", "broker").inc()
                if on_error:
                    on_error(exc)
