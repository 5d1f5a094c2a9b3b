"""One pricing path: the ``price`` CLI, the backfill and the pricing agent bill the same file alike.

The file holds final figures, running estimates of streams (never billed), retries of a request
under a new event id and exact redeliveries (billed once, at the first final figure), and
invalid lines.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from infra.workers import Proc, committed_lag, worker_command, worker_env
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import read_messages, wait_for
from tokenledger.cli import price_lines
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema.priced import priced_rows
from tokenledger.schema.raw_batch import event_time_ms
from tokenledger.schema.v1 import UsageEventV1
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw
from tokenledger.store.migrations import migrate


def usage_file(rng: random.Random) -> tuple[list[bytes], int]:
    """The lines, and the truth: the first final figure of each request, summed (nano-USD)."""
    table = LayeredPriceTable.from_path()
    docs: list[dict[str, Any]] = []
    billed: dict[str, int] = {}
    for n in range(60):
        for seq in (1, 2) if n % 6 == 0 else ():  # a streamed request: two running estimates first
            est = event_dict(request_id=f"r{n}", final=False, usage_source="estimated", stream_seq=seq)
            est["data"]["output_tokens"] = 100 * seq
            docs.append({**est, "id": f"e{n}-est{seq}"})
        final = event_dict(request_id=f"r{n}", input_tokens=rng.randrange(1_000, 9_000), cached_read_tokens=0)
        docs.append({**final, "id": f"e{n}"})
        if n % 10 == 3:  # the client retried: the same request under a new event id, another figure
            retry = event_dict(request_id=f"r{n}", input_tokens=50_000, cached_read_tokens=0)
            docs.append({**retry, "id": f"e{n}-retry"})
        if n % 12 == 5:
            docs.append({**final, "id": f"e{n}"})  # redelivered as is
        ev = UsageEventV1.model_validate_json(orjson.dumps(final))
        billed[f"r{n}"] = price(ev.data, ev.time, table).total_nanos
    lines = [json.dumps(d).encode() for d in docs] + [b"{not json", json.dumps(event_dict(input_tokens=-1)).encode()]
    return lines, sum(billed.values())


def test_cli_backfill_and_pricing_agent_bill_the_same(kafka: KafkaSettings, tmp_path: Path) -> None:
    lines, truth = usage_file(random.Random(7))

    cli = price_lines(iter(lines), tmp_path / "cli", "USD")
    assert (cli["priced"], cli["estimates"], cli["duplicates"], cli["dead_lettered"]) == (60, 20, 11, 2)

    store = ChdbStore(tmp_path / "chdb")
    migrate(store)
    ingest_raw(store, iter(lines), LayeredPriceTable.from_path())
    rows, backfill = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
    store.close()

    producer = Producer(kafka.client_config())
    for line in lines:
        try:
            doc = json.loads(line)
            key = f"{doc['source']}|{doc['data']['request_id']}".encode()
        except (ValueError, KeyError):
            key = b"bad"
        producer.produce(kafka.topics.usage_raw, line, key=key, timestamp=event_time_ms(line))
    assert producer.flush(30) == 0
    app_id = f"tl-path-{uuid.uuid4().hex[:8]}"
    env = worker_env(kafka, app_id=app_id, datadir=tmp_path / "faust", role="pricing")
    worker = Proc(worker_command(), env, tmp_path / "pricing.log").start()
    try:
        wait_for(
            lambda: committed_lag(kafka, f"{app_id}-pricing", kafka.topics.usage_raw) == 0,
            120,
            "the pricing agent",
            alive=lambda: worker.alive,
        )
    finally:
        worker.stop()
    priced = {}
    for m in read_messages(kafka, kafka.topics.usage_priced):
        for p in priced_rows(m.value()):  # batch messages: one stored row per priced request
            priced[p.identity] = p.cost_nanos

    assert rows == len(priced) == 60
    assert cli["total_nanos_usd"] == backfill == sum(priced.values()) == truth
