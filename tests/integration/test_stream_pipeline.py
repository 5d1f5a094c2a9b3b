"""The Faust workers against the real broker: exact thresholds, breakers and spend totals,
with duplicates, stream estimates, invalid events and a kill -9 and restart midway."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.broker import KafkaBroker
from infra.topics import SIMULATION_RETENTION_MS, create_topics
from infra.workers import Proc, worker_command, worker_env
from tests.factories import event_dict
from tokenledger.kafka_config import KafkaSettings, Topics
from tokenledger.schema.priced import priced_rows
from tokenledger.schema.raw_batch import event_time_ms, is_batch, split_batch

ROOT = Path(__file__).resolve().parents[2]
COST = 75_000_000  # gpt-4o, 10,000 in x $2.50/M + 5,000 out x $10/M, nano-USD

BUDGETS = """
timezone: "UTC"
budgets:
  - id: research-month
    tenant: acme
    scope: {department: research}
    period: month
    limit_usd: "1.00"
    downgrade_model: gpt-4o-mini
    max_tokens_per_request: 1000
"""


def raw_event(n: int, time_: str = "2026-10-10T10:00:00Z", **data: Any) -> tuple[bytes, bytes]:
    doc = event_dict(
        **{
            "request_id": f"req-{n}",
            "input_tokens": 10_000,
            "output_tokens": 5_000,
            "cached_read_tokens": 0,
            **data,
        }
    )
    doc["id"] = f"evt-{n}-{data.get('stream_seq', 0)}"
    doc["time"] = time_
    return f"//svc/chat-api|req-{n}".encode(), json.dumps(doc).encode()


class Worker(Proc):
    """``python -m stream_jobs worker`` with ``env``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__(worker_command(), env, log)


def read_messages(settings: KafkaSettings, topic: str) -> list[Any]:
    """Every message of ``topic``, from offset 0 of each partition, with a fresh reader."""
    c = Consumer(
        {
            **settings.client_config(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": settings.fetch_wait_ms,
        }
    )
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[Any] = []
    idle = 0
    while idle < 3:
        msgs = [m for m in c.consume(1000, 0.3) if not m.error()]
        idle = 0 if msgs else idle + 1
        out.extend(msgs)
    c.close()
    return out


def raw_events(settings: KafkaSettings) -> list[dict[str, Any]]:
    """Every event on ``usage-raw``, batch messages split into their events."""
    out: list[dict[str, Any]] = []
    for m in read_messages(settings, settings.topics.usage_raw):
        value = m.value() or b"{}"
        out.extend(orjson.loads(v) for v in (split_batch(value) if is_batch(value) else [value]))
    return out


def read_all(settings: KafkaSettings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return [(m.key(), m.value()) for m in read_messages(settings, topic)]


def latest(settings: KafkaSettings, topic: str) -> dict[bytes, Any]:
    state: dict[bytes, Any] = {}
    for k, v in read_all(settings, topic):
        if k is not None:
            state[k] = orjson.loads(v) if v else None
    return state


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    observe: Callable[[], Any] = lambda: None,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), f"a pipeline process exited while waiting for {what}"
        try:
            if check():
                return
        except Exception:  # the broker may be restarting: ask again
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last observed: {observe()!r}")


@pytest.fixture
def pipeline(broker: KafkaBroker, tmp_path: Path) -> Iterator[tuple[KafkaSettings, Worker, str]]:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{v}-{suffix}" for k, v in Topics().__dict__.items()})
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, topics=topics)
    create_topics(settings, partitions=3, retention_ms=SIMULATION_RETENTION_MS)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    app_id = f"tl-{suffix}"
    env = worker_env(settings, app_id=app_id, datadir=tmp_path / "faust", budgets=budgets, session_timeout_s=6)
    worker = Worker(env, tmp_path / "worker.log")
    yield settings, worker, app_id
    worker.stop()


def research_spend(settings: KafkaSettings, app_id: str) -> dict[str, int]:
    state = latest(settings, f"{app_id}-spend-changelog").get(b'"acme|department=research"')
    return state["month"] if state else {}


@pytest.mark.parametrize(
    "kill_midway",
    [
        pytest.param(False, id="steady"),
        # Was flaky (about 1 run in 8, 1 in 3 under CPU load) until stream_jobs/faust_fixes.py:
        # Faust skipped records while seeking after recovery. 29 runs under load since: 0 failures.
        pytest.param(True, id="kill-9-and-restart"),
    ],
)
def test_pipeline_exact(pipeline: tuple[KafkaSettings, Worker, str], kill_midway: bool) -> None:
    settings, worker, app_id = pipeline
    producer = Producer(settings.client_config())

    def send(items: list[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            producer.produce(settings.topics.usage_raw, value, key=key, timestamp=event_time_ms(value))
        assert producer.flush(10) == 0

    # Phase 1: 10 requests, 3 redelivered, 2 running estimates of a stream, 3 invalid events.
    phase1 = [raw_event(n) for n in range(1, 11)]
    estimates = [
        raw_event(99, usage_source="estimated", final=False, stream_seq=s, output_tokens=100 * s) for s in (1, 2)
    ]
    invalid = [
        (b"bad", b"{not json"),
        (b"bad", json.dumps({**event_dict(input_tokens=-1)}).encode()),
        (b"bad", json.dumps({**event_dict(), "surprise": 1}).encode()),
    ]
    send(phase1 + phase1[:3] + estimates + invalid)
    worker.start()
    october = "2026-10-01T00:00Z"
    wait_for(lambda: research_spend(settings, app_id).get(october) == 10 * COST, 90, "phase 1 spend")
    if kill_midway:
        worker.kill9()

    # Phase 2: 10 more requests, redeliveries of a phase-1 and a phase-2 request, the final
    # figure of the streamed request; the restarted worker must recover and count each once.
    phase2 = [raw_event(n) for n in range(11, 21)]
    final_of_stream = raw_event(99, stream_seq=3)
    send([*phase2, phase1[4], phase2[4], final_of_stream])
    if kill_midway:
        worker.start()

    def diagnose() -> dict[str, Any]:
        if worker.proc is not None and worker.proc.poll() is None:
            os.kill(worker.proc.pid, signal.SIGUSR2)  # task stacks + consumer positions into the worker log
            time.sleep(2)
        priced = sorted(
            json.loads(v or b"")["event"]["id"] for _, v in read_all(settings, settings.topics.usage_priced)
        )
        found = {"spend": research_spend(settings, app_id), "priced": priced, "log": str(worker.log)}
        # Kept beside the worker log (with the SIGUSR2 dump) for post-mortems of CI runs.
        worker.log.with_name("diagnosis.json").write_text(json.dumps(found, indent=1))
        return found

    wait_for(lambda: research_spend(settings, app_id).get(october) == 21 * COST, 150, "phase 2 spend", diagnose)

    # A request in November: the budget returns to normal for the new period.
    send([raw_event(200, time_="2026-11-02T08:00:00Z")])
    wait_for(
        lambda: (
            (latest(settings, settings.topics.breakers).get(b"research-month") or {}).get("period_key")
            == "2026-11-01T00:00Z"
        ),
        60,
        "November breaker",
    )

    spend_state = research_spend(settings, app_id)
    assert spend_state == {october: 21 * COST, "2026-11-01T00:00Z": COST}

    crossings = [orjson.loads(v or b"") for _, v in read_all(settings, settings.topics.thresholds)]
    assert [(c["level"], c["spent_nanos"]) for c in crossings] == [
        ("warning", 7 * COST),  # 525,000,000 >= 500,000,000
        ("throttled", 11 * COST),  # 825,000,000 >= 800,000,000
        ("broken", 14 * COST),  # 1,050,000,000 >= 1,000,000,000
    ]
    assert {c["period_key"] for c in crossings} == {october}

    breakers = [orjson.loads(v or b"") for _, v in read_all(settings, settings.topics.breakers)]
    transitions = [
        (b["state"], b["period_key"])
        for i, b in enumerate(breakers)
        if i == 0 or b["state"] != breakers[i - 1]["state"]
    ]
    assert transitions == [
        ("normal", october),
        ("warning", october),
        ("throttled", october),
        ("broken", october),
        ("normal", "2026-11-01T00:00Z"),
    ]
    # Each request moves spend by 7.5 % of the limit (> the 1 % publish step): the breaker is
    # republished every time, and its spend is exact, counted once through the restart.
    october_breakers = [b for b in breakers if b["period_key"] == october]
    # A budget above normal is also republished every 2 s with the same content (repeats collapse).
    spent = [b["spent_nanos"] for b in october_breakers]
    assert [x for i, x in enumerate(spent) if i == 0 or x != spent[i - 1]] == [COST * k for k in range(1, 22)]
    final = breakers[-1]
    assert final["remaining_nanos"] == 1_000_000_000 - COST and final["remaining_usd"] == "0.925000000"
    assert final["downgrade_model"] == "gpt-4o-mini" and final["max_tokens_per_request"] == 1000
    broken = october_breakers[-1]
    assert broken["state"] == "broken" and broken["remaining_nanos"] == 0
    assert broken["period_end"] == "2026-11-01T00:00:00+00:00"

    priced = {
        row.event_id for _, v in read_all(settings, settings.topics.usage_priced) for row in priced_rows(v or b"")
    }
    assert len(priced) == 22  # 20 + the stream's final figure + November; estimates never priced
    keyed = [(k, orjson.loads(v or b"")) for k, v in read_all(settings, settings.topics.dead_letter)]
    letters = [d for _, d in keyed]
    assert len(letters) == 3 and all(d["stage"] == "pricing" and d["reason"] for d in letters)
    # Keyed by origin, so a replay after a crash would repeat the key, not add a letter.
    assert all(k == "{topic}/{partition}/{offset}".format(**d["origin"]).encode() for k, d in keyed)
    assert {d["origin"]["topic"] for d in letters} == {settings.topics.usage_raw}
    assert any("input_tokens" in d["reason"] for d in letters)
    assert any("surprise: Extra inputs are not permitted" in d["reason"] for d in letters)
