"""``python -m billing serve --sink --schedule``: bills over HTTP while the same process writes the embedded store.

Events of one scope go to one partition in order, so every bill downloaded mid-stream must
be exactly a prefix of the stream: its request count ``k`` and its total equal the first
``k`` events' costs to the nano-USD. After the stream, the bill equals the whole stream and,
once the service stopped, the store read directly.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
from confluent_kafka import Producer

from infra.workers import Proc, kafka_env
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import wait_for
from tokenledger.kafka_config import KafkaSettings
from tokenledger.money import display_money
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.priced import encode_priced
from tokenledger.store.chdb_store import ChdbStore

N = 3000
TOKEN = "demo-acme-token"  # the shipped demo grant for tenant acme
BILL = "/v1/tenants/acme/bills/2026-03/department/research.json"


def priced_stream(n: int) -> tuple[list[bytes], list[int]]:
    """n priced events of one scope and the running total after each, in nano-USD."""
    table = LayeredPriceTable.from_path()
    values, prefix, total = [], [0], 0
    for i in range(n):
        doc = event_dict(request_id=f"r{i}", input_tokens=900 + i, output_tokens=50 + i % 11)
        doc["id"] = f"e{i}"
        ev = decode_usage_event(json.dumps(doc).encode())
        cost = price(ev.data, ev.time, table)
        total += cost.total_nanos
        values.append(encode_priced(ev, cost))
        prefix.append(total)
    return values, prefix


def get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def service(tmp_path: Path, kafka: KafkaSettings) -> tuple[Proc, str]:
    command = [
        sys.executable,
        "-m",
        "billing",
        "--store",
        f"chdb://{tmp_path / 'chdb'}",
        "serve",
        "--port",
        "0",
        "--sink",
        "--schedule",
        "--group",
        f"sink-{kafka.topics.usage_priced}",
        "--batch-size",
        "200",
        "--batch-wait-s",
        "0.1",
        "--out",
        str(tmp_path / "out"),
    ]
    proc = Proc(command, {**kafka_env(kafka), "TOKENLEDGER_METRICS_PORT": "0"}, tmp_path / "service.log").start()
    proc.wait_log("serving on ")
    url = re.search(r"serving on (http://\S+)", proc.log.read_text())
    assert url is not None
    return proc, url.group(1)


def test_bills_while_the_sink_writes_the_embedded_store(kafka: KafkaSettings, tmp_path: Path) -> None:
    values, prefix = priced_stream(N)
    svc, base = service(tmp_path, kafka)
    try:
        assert get(base + "/healthz", None)[0] == 200
        wait_for(lambda: get(base + "/readyz", None)[0] == 200, 60, "the service to be ready")
        # The embedded store is held: a second process gets one line naming the holder, exit 2.
        cli = subprocess.run(
            [sys.executable, "-m", "billing", "--store", f"chdb://{tmp_path / 'chdb'}", "bills", "--month", "2026-03"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cli.returncode == 2
        lines = cli.stderr.strip().splitlines()
        assert len(lines) == 1 and f"held by pid {svc.proc.pid if svc.proc else 0}" in lines[0], lines
        assert f"the billing service at {base} answers the same questions" in lines[0], lines

        def publish() -> None:
            producer = Producer(kafka.client_config())
            for i, value in enumerate(values):
                producer.produce(kafka.topics.usage_priced, value, key=b"acme")  # one partition: in order
                producer.poll(0)
                if i % 100 == 99:
                    time.sleep(0.05)  # ~2,000 events/s: the stream lasts ~1.5 s or more
            assert producer.flush(30) == 0

        publisher = threading.Thread(target=publish)
        publisher.start()
        snapshots: list[tuple[int, int]] = []
        while publisher.is_alive() or not snapshots or snapshots[-1][0] < N:
            status, body = get(base + BILL)
            if status == 200:
                summary = orjson.loads(body)["summary"]
                snapshots.append((summary["requests"], summary["cost_nanos"]))
            assert len(snapshots) < 2000, "the sink never caught up"
            time.sleep(0.02)
        publisher.join()
        for k, cost in snapshots:  # every download is exactly the store after some batch
            assert cost == prefix[k], (k, cost, prefix[k])
        assert any(0 < k < N for k, _ in snapshots), f"no bill was downloaded mid-stream: {snapshots[:5]}"
        assert snapshots[-1] == (N, prefix[N])
        assert get(base + "/metrics", None)[1].count(b"tokenledger_events_total") > 0
        # The console of the running service: the month's total equals the bill (rollups built in
        # the background or not), and a budget's state comes live from the breakers topic.
        status, page = get(base + "/console/t/acme/overview?month=2026-03")
        assert status == 200 and f'<span id="total-usd">{display_money(prefix[N])}</span>'.encode() in page
        put = urllib.request.Request(  # a budget created live through the admin API
            base + "/v1/admin/budgets/acme-research-month",
            data=orjson.dumps({"tenant": "acme", "scope": {"department": "research"}, "limit_usd": "60"}),
            method="PUT",
            headers={"Authorization": "Bearer demo-admin-token", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(put, timeout=30) as resp:
            assert resp.status in (200, 201)
        breaker = {
            "budget_id": "acme-research-month",
            "tenant": "acme",
            "scope": {"department": "research"},
            "state": "throttled",
            "spent_nanos": 55_000_000_000,
            "limit_nanos": 60_000_000_000,
            "period_end": "2099-01-01T00:00:00+00:00",
            "updated_at": "2026-03-20T00:00:00+00:00",
        }
        producer = Producer(kafka.client_config())
        producer.produce(kafka.topics.breakers, orjson.dumps(breaker), key=b"acme-research-month")
        assert producer.flush(30) == 0

        def research_row() -> bytes:
            page = get(base + "/console/t/acme/budgets")[1]
            return next((r for r in page.split(b"<tr>") if b"acme-research-month" in r), b"")

        wait_for(lambda: b"state-throttled" in research_row(), 20, "the breaker on the budgets page")
        assert b"55.00 USD" in research_row()
    finally:
        assert svc.stop() == 0
    store = ChdbStore(tmp_path / "chdb")  # released on SIGTERM: read it directly
    try:
        rows, nanos = store.query("SELECT count(), sum(cost_nanos) FROM usage_events FINAL").rows[0]
        assert (rows, nanos) == (N, prefix[N])
    finally:
        store.close()
