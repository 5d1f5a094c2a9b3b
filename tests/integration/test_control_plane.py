"""The control plane live: budgets, tenants and keys changed through the admin API while the pipeline runs.

Real processes on the real broker: a worker (pricing + spend), the billing service (sink,
admin API, bills) and the HTTP ingest, all following the control topic. A budget created
mid-month counts the month's spend already stored; raising, lowering, re-levelling and deleting
it move its breaker and thresholds exactly; a revoked key answers 401; the admin API refuses
tenants' keys and hostile bodies with JSON 4xx, never a 5xx; a process killed with -9 during a
change comes back with the same control state.
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from confluent_kafka import Producer

from infra.broker import free_port
from infra.workers import Proc, kafka_env, worker_command, worker_env
from tests.factories import event_dict
from tests.integration.test_stream_pipeline import read_all, wait_for
from tokenledger.control.follow import follow
from tokenledger.control.records import to_doc
from tokenledger.kafka_config import KafkaSettings
from tokenledger.pricing import LayeredPriceTable, price
from tokenledger.schema.fastdecode import decode_usage_event
from tokenledger.schema.raw_batch import event_time_ms

ADMIN = "demo-admin-token"  # the shipped demo admin token (billing.yaml)
BILLING = "demo-acme-token"  # the shipped demo billing token of acme (control.yaml)
INGEST = "ti-demo-acme"  # the shipped demo ingest key of acme
NOW = datetime.now(UTC).replace(microsecond=0)


def call(
    method: str, url: str, token: str | None = ADMIN, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, orjson.loads(text)
        except orjson.JSONDecodeError:
            return err.code, {"not-json": text.decode(errors="replace")}


def usage(n: int, project: str, at: datetime) -> tuple[bytes, bytes, int]:
    """(key, value, cost nano-USD) of request ``n`` of ``project`` at ``at``."""
    doc = event_dict(request_id=f"{project}-{n}", input_tokens=10_000, output_tokens=5_000, cached_read_tokens=0)
    doc["id"] = f"evt-{project}-{n}"
    doc["time"] = at.isoformat().replace("+00:00", "Z")
    doc["data"]["labels"]["project"] = project
    value = json.dumps(doc).encode()
    cost = price(decode_usage_event(value).data, at, LayeredPriceTable.from_path()).total_nanos
    return f"//svc/chat-api|{project}-{n}".encode(), value, cost


class Pipeline:
    """Worker, billing service and ingest on one broker's per-test topics."""

    def __init__(self, kafka: KafkaSettings, tmp: Path) -> None:
        self.kafka, self.tmp = kafka, tmp
        env = worker_env(kafka, app_id=f"cp-{kafka.topics.control}", datadir=tmp / "faust", session_timeout_s=6)
        self.worker = Proc(worker_command(), {**env, "TOKENLEDGER_BREAKER_REPEAT_S": "30"}, tmp / "worker.log")
        billing = [
            sys.executable, "-m", "billing", "--store", f"chdb://{tmp / 'chdb'}", "serve", "--port", "0", "--sink",
            "--group", f"sink-{kafka.topics.usage_priced}", "--batch-size", "200", "--batch-wait-s", "0.1",
        ]  # fmt: skip
        self.billing = Proc(billing, {**kafka_env(kafka), "TOKENLEDGER_METRICS_PORT": "0"}, tmp / "billing.log")
        self.ingest_port = free_port()
        ingest = [sys.executable, "-m", "producers.ingest", "serve", "--port", str(self.ingest_port)]
        self.ingest = Proc(ingest, kafka_env(kafka), tmp / "ingest.log")
        self.producer = Producer(kafka.client_config())

    def start_billing(self) -> str:
        before = self.billing.log.read_text() if self.billing.log.exists() else ""
        self.billing.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = re.findall(r"serving on (http://\S+)", self.billing.log.read_text()[len(before) :])
            if found:
                return str(found[0])
            assert self.billing.alive, self.billing.tail()
            time.sleep(0.2)
        raise AssertionError("billing service did not start")

    def start_ingest(self) -> str:
        self.ingest.start()
        self.ingest.wait_log("ingest on http://")
        return f"http://127.0.0.1:{self.ingest_port}"

    def send(self, items: list[tuple[bytes, bytes, int]]) -> int:
        for key, value, _ in items:
            self.producer.produce(self.kafka.topics.usage_raw, value, key=key, timestamp=event_time_ms(value))
        assert self.producer.flush(10) == 0
        return sum(cost for _, _, cost in items)

    def breakers(self, budget_id: str) -> list[dict[str, Any] | None]:
        return [
            None if v is None else orjson.loads(v)
            for k, v in read_all(self.kafka, self.kafka.topics.breakers)
            if k == budget_id.encode()
        ]

    def thresholds(self, budget_id: str) -> list[tuple[str, int, int]]:
        found = [orjson.loads(v or b"") for _, v in read_all(self.kafka, self.kafka.topics.thresholds)]
        return [(t["level"], t["spent_nanos"], t["limit_nanos"]) for t in found if t["budget_id"] == budget_id]

    def stop(self) -> None:
        for p in (self.ingest, self.billing, self.worker):
            p.stop()


@pytest.fixture
def pipeline(kafka: KafkaSettings, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka, tmp_path)
    yield p
    p.stop()


def test_budgets_and_keys_change_while_it_runs(pipeline: Pipeline) -> None:
    p = pipeline
    p.worker.start()
    base = p.start_billing()
    ingest = p.start_ingest()
    p.worker.wait_log("Worker ready")
    admin = base + "/v1/admin"

    # Who may administer: an admin token; a tenant's billing token or ingest key is refused (403).
    assert call("GET", admin + "/budgets", None)[0] == 401
    assert call("GET", admin + "/budgets", "nope")[0] == 401
    assert call("GET", admin + "/budgets", BILLING)[0] == 403
    assert call("GET", admin + "/budgets", INGEST)[0] == 403
    status, listed = call("GET", admin + "/budgets?tenant=acme")
    assert status == 200 and [b["id"] for b in listed["budgets"]][:2] == ["acme-agents-day", "acme-copilot-prod-day"]

    # Spend of project "live" before its budget exists: 4 requests this month, in the store.
    early = [usage(i, "live", NOW - timedelta(hours=2) + timedelta(minutes=i)) for i in range(4)]
    opening = p.send(early)
    wait_for(
        lambda: _stored(base, "live") == opening, 60, "the early requests in the store", lambda: _stored(base, "live")
    )

    # A new budget counts the month so far (from the store), announces itself, then counts new requests.
    limit = 1_000_000_000  # 1 USD
    status, made = call(
        "PUT", admin + "/budgets/live-month", body={"tenant": "acme", "scope": {"project": "live"}, "limit_usd": "1"}
    )
    assert status == 201 and made["opening_nanos"] == opening and made["counts_from"]
    wait_for(lambda: bool(p.breakers("live-month")), 20, "the new budget's first breaker")
    first = p.breakers("live-month")[-1]
    assert first is not None and (first["state"], first["spent_nanos"], first["limit_nanos"]) == (
        "normal",
        opening,
        limit,
    )
    after = datetime.now(UTC) + timedelta(seconds=1)  # after the budget's counts_from
    more = [usage(10 + i, "live", after + timedelta(seconds=i)) for i in range(3)]
    spent = opening + p.send(more)  # 7 x 0.075 = 0.525 USD: past the warning level (0.5)
    wait_for(lambda: (p.breakers("live-month")[-1] or {}).get("spent_nanos") == spent, 30, "the new requests counted")
    assert p.breakers("live-month")[-1]["state"] == "warning"  # type: ignore[index]
    assert p.thresholds("live-month") == [("warning", spent, limit)]

    # Lowered below the spend: broken at once (both levels it now passes cross, once).
    status, _ = call(
        "PUT", admin + "/budgets/live-month", body={"tenant": "acme", "scope": {"project": "live"}, "limit_usd": "0.5"}
    )
    assert status == 200
    wait_for(lambda: (p.breakers("live-month")[-1] or {}).get("state") == "broken", 10, "broken after lowering")
    last = p.breakers("live-month")[-1]
    assert last is not None and (last["spent_nanos"], last["limit_nanos"], last["remaining_nanos"]) == (
        spent,
        500_000_000,
        0,
    )
    assert p.thresholds("live-month")[1:] == [("throttled", spent, 500_000_000), ("broken", spent, 500_000_000)]

    # Raised: un-broken at once; the levels it no longer reaches are re-armed, nothing is announced.
    body = {"tenant": "acme", "scope": {"project": "live"}, "limit_usd": "10"}
    assert call("PUT", admin + "/budgets/live-month", body=body)[0] == 200
    wait_for(lambda: (p.breakers("live-month")[-1] or {}).get("state") == "normal", 10, "normal after raising")
    assert p.breakers("live-month")[-1]["remaining_nanos"] == 10_000_000_000 - spent  # type: ignore[index]
    assert len(p.thresholds("live-month")) == 3

    # New levels: the warning level of the new definition (5 % of 10 USD) is crossed once.
    body["levels"] = {"warn": "0.05", "throttle": "0.8", "break": "1"}
    assert call("PUT", admin + "/budgets/live-month", body=body)[0] == 200
    wait_for(lambda: (p.breakers("live-month")[-1] or {}).get("state") == "warning", 10, "warning under new levels")
    assert p.thresholds("live-month")[3:] == [("warning", spent, 10_000_000_000)]

    # Fixed fields, unknown ids, bad values: JSON 4xx naming the field.
    status, err = call("PUT", admin + "/budgets/live-month", body={**body, "scope": {"project": "other"}})
    assert status == 409 and err["error"]["message"].startswith("scope:")
    assert call("DELETE", admin + "/budgets/nope")[0] == 404
    status, err = call("PUT", admin + "/budgets/x1", body={"tenant": "acme", "limit_usd": 5.5})
    assert status == 400 and err["error"]["message"].startswith("limit_usd:")

    # Deleted: its breaker is withdrawn (a tombstone: gateways forget it).
    assert call("DELETE", admin + "/budgets/live-month")[0] == 200
    wait_for(lambda: p.breakers("live-month")[-1] is None, 10, "the breaker withdrawn")

    # Keys: issued (the secret once), used, listed without secrets, revoked -> 401 at once.
    status, key = call("POST", admin + "/keys", body={"tenant": "acme", "kind": "ingest", "name": "ci"})
    assert status == 201 and key["secret"].startswith("ti_")
    event = json.loads(usage(99, "keys", NOW)[1])
    accepted = lambda: call("POST", ingest + "/v1/events", key["secret"], body=event)[0] == 202  # noqa: E731
    wait_for(accepted, 5, "the new key accepted by ingest (its own reader of the control topic)")
    status, keys = call("GET", admin + "/keys?tenant=acme")
    assert status == 200 and all("secret" not in k and "sha256" not in k for k in keys["keys"])
    assert key["id"] in {k["id"] for k in keys["keys"]}
    assert call("DELETE", admin + "/keys/" + key["id"])[0] == 200
    wait_for(
        lambda: call("POST", ingest + "/v1/events", key["secret"], body=event)[0] == 401, 5, "the revoked key refused"
    )

    # Tenants: a tenant's timezone and currency.
    status, tenant = call(
        "PUT",
        admin + "/tenants/initech",
        body={"display_name": "Initech", "timezone": "Europe/Berlin", "currency": "EUR"},
    )
    assert status == 201 and tenant["timezone"] == "Europe/Berlin"
    status, err = call("PUT", admin + "/tenants/initech", body={"timezone": "Mars/Olympus"})
    assert status == 400 and err["error"]["message"].startswith("timezone:")

    # The audit: who, what, when, before and after, for every change above.
    audit = [orjson.loads(v or b"") for _, v in read_all(p.kafka, p.kafka.topics.control_audit)]
    mine = [(a["actor"], a["action"], a["kind"], a["id"]) for a in audit if a["actor"] == "demo-admin"]
    assert mine[:5] == [
        ("demo-admin", a, "budget", "live-month") for a in ("create", "update", "update", "update", "delete")
    ]
    assert mine[5:] == [
        ("demo-admin", "create", "key", key["id"]),
        ("demo-admin", "delete", "key", key["id"]),
        ("demo-admin", "create", "tenant", "initech"),
    ]


def _stored(base: str, project: str) -> int:
    month = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")  # acme's timezone
    status, doc = call("GET", f"{base}/v1/tenants/acme/bills/{month}/project/{project}.json", BILLING)
    return int(doc["summary"]["cost_nanos"]) if status == 200 else -1


def test_hostile_admin_bodies_never_5xx(pipeline: Pipeline) -> None:
    base = pipeline.start_billing()
    rnd = random.Random(7)
    values: list[Any] = [
        None,
        True,
        -1,
        0,
        1e308,
        "x" * 5000,
        "\u0000",
        "../../etc",
        "1",
        "-5",
        "NaN",
        [],
        {},
        [1],
        {"a": 1},
    ]
    fields = [
        "id",
        "tenant",
        "scope",
        "period",
        "limit_usd",
        "levels",
        "kind",
        "name",
        "timezone",
        "currency",
        "publish_step",
        "opening",
        "counts_from",
        "x",
        "requests",
        "tokens",
        "concurrent",
        "per",
    ]
    seen: set[int] = set()
    for i in range(300):
        doc = {rnd.choice(fields): rnd.choice(values) for _ in range(rnd.randint(0, 5))}
        routes = [("/budgets/b", "PUT"), ("/tenants/t", "PUT"), ("/keys", "POST"), ("/limits/l", "PUT")]
        path, method = rnd.choice(routes)
        path += str(i) if method == "PUT" else ""
        status, body = call(method, base + "/v1/admin" + path, body=doc)
        seen.add(status)
        assert (status < 500 and "error" in body) or status in (200, 201), (doc, status, body)
    for raw in (b"{", b"[]", b"\xff\xfe", b"null", b'{"limit_usd": "1"' * 1000):
        status, body = call("PUT", base + "/v1/admin/budgets/raw", raw=raw)
        assert status == 400 and "error" in body
    assert 400 in seen


def test_kill_9_during_changes_restores_the_same_control_state(pipeline: Pipeline) -> None:
    """The worker and the billing service each killed with -9 while changes stream in, then restarted."""
    p = pipeline
    p.worker.start()
    base = p.start_billing()
    p.worker.wait_log("Worker ready")
    stop = threading.Event()
    done: list[int] = []

    def change() -> None:
        i = 0
        while not stop.is_set():
            url = f"{base}/v1/admin/budgets/k{i % 7}"
            try:
                status, _ = call("PUT", url, body={"tenant": "acme", "limit_usd": str(1 + i)})
            except (urllib.error.URLError, ConnectionError):  # the one in flight when the process died
                break
            if status in (200, 201):
                done.append(i)
            i += 1

    writer = threading.Thread(target=change)
    writer.start()
    time.sleep(1.0)
    p.worker.kill9()  # mid-change: markers in flight, a change half applied
    time.sleep(1.0)
    p.billing.kill9()  # mid-change: some PUT is in flight
    stop.set()
    writer.join(30)
    assert done, "no change landed before the kill"
    p.worker.start()
    base = p.start_billing()
    truth = follow(p.kafka)  # a fresh reader of the control topic
    try:
        status, listed = call("GET", base + "/v1/admin/budgets?tenant=acme")
        assert status == 200
        mine = [b for b in listed["budgets"] if b["id"].startswith("k")]
        assert mine == [_doc(b) for _, b in sorted(truth.state.budgets.items()) if b.id.startswith("k")]
        assert len(mine) == min(7, len(done))
        last = done[-1]
        assert truth.state.budgets[f"k{last % 7}"].limit_usd >= 1 + last  # every acknowledged change is there
        # The restarted worker publishes each budget's breaker under its final definition.
        final = {b.id: b.limit_nanos for b in truth.state.budgets.values() if b.id.startswith("k")}

        def breakers_final() -> bool:
            latest = {bid: p.breakers(bid)[-1:] for bid in final}
            return all(v and v[0] is not None and v[0]["limit_nanos"] == final[bid] for bid, v in latest.items())

        wait_for(breakers_final, 90, "every breaker under its final definition", alive=lambda: p.worker.alive)
    finally:
        truth.close()


def _doc(budget: Any) -> dict[str, Any]:
    doc = to_doc(budget)
    doc["opening_nanos"] = sum(n for _, n in budget.opening)
    doc.pop("opening")
    return doc
