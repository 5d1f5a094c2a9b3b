"""The process that stays up notices a worker stage nobody consumes while events wait for it."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Consumer, Producer

from stream_jobs.stage_watch import StageWatch, pipeline_stages
from tokenledger import metrics
from tokenledger.kafka_config import KafkaSettings


def test_a_stage_without_workers_is_reported_until_one_joins(
    kafka: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    app_id = f"watch-{kafka.topics.usage_raw}"
    watch = StageWatch(kafka, pipeline_stages(kafka, app_id))
    producer = Producer(kafka.client_config())
    for i in range(7):
        producer.produce(kafka.topics.usage_raw, b"{}", key=str(i).encode())
    assert producer.flush(30) == 0
    with caplog.at_level(logging.INFO, logger="stream_jobs.stage_watch"):
        assert watch.check() == {"pricing": 7}  # nothing waits for spend: not reported
        assert caplog.records == []  # one empty look may be a rebalance: the gauge only
        assert watch.check() == {"pricing": 7}  # the second look in a row: said
        assert watch.check() == {"pricing": 7}  # said once, not on every check
        assert metrics.STAGE_UNCONSUMED.labels("pricing")._value.get() == 7
        worker = Consumer({**kafka.client_config(), "group.id": f"{app_id}-pricing", "auto.offset.reset": "earliest"})
        worker.subscribe([kafka.topics.usage_raw])
        deadline = time.monotonic() + 60
        while not worker.assignment() and time.monotonic() < deadline:
            worker.poll(0.2)
        try:
            assert watch.check() == {}
        finally:
            worker.close()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert said[0].startswith(f"no pricing worker is consuming {kafka.topics.usage_raw} (groups {app_id}-pricing/")
    assert said[0].endswith("and 7 events wait: start `TOKENLEDGER_AGENTS=pricing python -m stream_jobs worker`")
    assert said[1] == "pricing stage is consumed again"
