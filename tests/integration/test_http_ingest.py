"""HTTP ingest on the real broker: tenants from keys, partial batches, limits, same priced rows as the producer."""

from __future__ import annotations

import copy
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from infra.broker import free_port
from infra.workers import Proc, kafka_env
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import raw_events, wait_for
from tokenledger.batch_pricing import BatchStats, priced_events
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable

BATCH = "application/cloudevents-batch+json"
NOW = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def post(url: str, body: bytes, key: str | None, ctype: str = "application/cloudevents+json") -> tuple[int, Any]:
    headers = {"Content-Type": ctype, **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read() or b"{}")


def ev(i: int, **labels: Any) -> dict[str, Any]:
    doc = event_dict(request_id=f"http-{i}", input_tokens=1000 + i, output_tokens=100 + i)
    doc["id"] = f"http-evt-{i}"
    doc["source"] = "//svc/go-billing-client"
    doc["time"] = NOW  # inside the ingest's time window
    doc["data"]["labels"] = {k: v for k, v in {**doc["data"]["labels"], **labels}.items() if v is not None}
    return doc


def test_http_ingest(kafka: KafkaSettings, tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "producers.ingest", "serve", "--port", str(port), "--max-batch", "50"]
    proc = Proc(command, kafka_env(kafka), tmp_path / "ingest.log").start()
    url = f"http://127.0.0.1:{port}/v1/events"
    try:
        proc.wait_log("ingest on ")
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200, 60, "ready"
        )
        one = ev(0, tenant=None)  # no tenant in the body: the key's
        assert post(url, orjson.dumps(one), None) == (
            401,
            {"error": {"code": 401, "message": "unknown or missing API key"}},
        )
        assert post(url, orjson.dumps(one), "ti-demo-acme") == (202, {"accepted": 1})
        bad = ev(2)
        bad["data"]["output_tokens"] = -5
        batch = [ev(1), bad, ev(3, tenant="globex"), ev(4), "nonsense"]
        status, doc = post(url, orjson.dumps(batch), "ti-demo-acme", BATCH)
        assert status == 207 and doc["accepted"] == 2
        assert [(r["index"], r["id"]) for r in doc["rejected"]] == [(1, "http-evt-2"), (2, "http-evt-3"), (4, None)]
        assert doc["rejected"][1]["reason"] == "tenant 'globex' is not this key's tenant"
        assert doc["rejected"][0]["reason"].startswith("data.output_tokens")
        # The globex key writes globex usage; acme's events through it are refused.
        assert post(url, orjson.dumps(ev(5, tenant="globex")), "ti-demo-globex") == (202, {"accepted": 1})
        status, doc = post(url, orjson.dumps([bad]), "ti-demo-acme", BATCH)
        assert status == 400 and doc["accepted"] == 0
        assert post(url, orjson.dumps([ev(100 + i) for i in range(51)]), "ti-demo-acme", BATCH)[0] == 413
        assert post(url, b"x" * (1 << 20) + b"x", "ti-demo-acme")[0] == 413
        # A retried request is accepted again: idempotent downstream by (source, id).
        assert post(url, orjson.dumps(ev(4)), "ti-demo-acme") == (202, {"accepted": 1})
    finally:
        assert proc.stop() == 0
    raw = raw_events(kafka)
    assert sorted((d["id"], d["data"]["labels"]["tenant"]) for d in raw) == [
        ("http-evt-0", "acme"),
        ("http-evt-1", "acme"),
        ("http-evt-4", "acme"),
        ("http-evt-4", "acme"),
        ("http-evt-5", "globex"),
    ]
    # The same priced rows as the Python producer path would give for the accepted events.
    expected = [ev(0, tenant="acme"), ev(1), ev(4), ev(5, tenant="globex")]
    table = LayeredPriceTable.from_path()
    got, want = BatchStats(), BatchStats()
    got_rows = [(e.id, c) for e, c in priced_events([json.dumps(d).encode() for d in raw], table, got)]
    want_rows = [
        (e.id, c) for e, c in priced_events([json.dumps(copy.deepcopy(d)).encode() for d in expected], table, want)
    ]
    assert sorted(got_rows, key=lambda r: r[0]) == sorted(want_rows, key=lambda r: r[0])
    assert (got.priced, got.duplicates, want.priced) == (4, 1, 4) and got.total_nanos == want.total_nanos > 0
