"""HTTP downloads with per-tenant access control, against chdb on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from billing.context import BillingContext
from billing.http_api import BillingServer
from tests.billing_fixture import EVENTS
from tokenledger.control.files import DEFAULT_CONTROL, ControlFile
from tokenledger.control.state import ControlState
from tokenledger.pricing import LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw


@pytest.fixture
def server(store: ChdbStore) -> Iterator[str]:
    ingest_raw(store, EVENTS, LayeredPriceTable.from_path())
    ctx = BillingContext.default(clock=lambda: datetime(2026, 10, 21, 1, tzinfo=UTC))
    srv = BillingServer(store, ctx, ControlState.from_records(ControlFile.load(DEFAULT_CONTROL).records())).start()
    yield srv.url
    srv.stop()


def get(url: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_bill_downloads_in_three_formats(server: str) -> None:
    base = f"{server}/v1/tenants/acme/bills/2026-10/department/research"
    status, headers, body = get(base + ".json", "demo-acme-token")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert orjson.loads(body)["summary"]["cost_nanos"] == 1_337_972_500
    status, headers, body = get(base + ".csv", "demo-acme-token")
    assert status == 200 and b"total_usd,1.337972500" in body
    status, headers, body = get(base + ".pdf", "demo-acme-token")
    assert status == 200 and body.startswith(b"%PDF-")
    assert headers["Content-Disposition"] == 'attachment; filename="bill-acme-2026-10-department-research.pdf"'


def test_access_control(server: str) -> None:
    url = f"{server}/v1/tenants/acme/bills/2026-10/department/research.json"
    assert get(url, None)[0] == 401
    assert get(url, "wrong-token")[0] == 401
    status, _, body = get(url, "demo-globex-token")  # a valid token of another tenant
    assert status == 403 and orjson.loads(body)["error"]["code"] == 403
    assert get(url, None)[1]["WWW-Authenticate"] == "Bearer"
    assert get(f"{server}/v1/tenants/acme/bills/2026-10/secret_col/x.json", "demo-acme-token")[0] == 400
    # A scope without usage that month (e.g. misspelt) is a 404 with the reason, not an empty bill.
    status, _, body = get(f"{server}/v1/tenants/acme/bills/2026-10/department/reserch.json", "demo-acme-token")
    assert (status, orjson.loads(body)["error"]["message"]) == (
        404,
        "no usage of department=reserch for tenant acme in 2026-10",
    )


def test_allocation_and_forecast_endpoints(server: str) -> None:
    status, _, body = get(
        f"{server}/v1/tenants/acme/allocations/2026-10.json?method=direct&party=project", "demo-acme-token"
    )
    doc = orjson.loads(body)
    assert status == 200
    assert sum(doc["split_nanos"].values()) == doc["amount_nanos"] == 1_337_972_500 - 700_000_000 + 7_500_000
    status, _, body = get(f"{server}/v1/tenants/acme/forecasts.json", "demo-acme-token")
    forecasts = orjson.loads(body)["forecasts"]
    assert status == 200
    assert [f["budget_id"] for f in forecasts] == ["acme-legal-month", "acme-research-month"]  # id order
    research = forecasts[1]["forecast"]
    assert research["as_of"] == "2026-10-20"
    assert research["month_to_date_nanos"] == 1_337_972_500


def test_every_error_is_json(server: str, store: ChdbStore) -> None:
    token = "demo-acme-token"
    bill = f"{server}/v1/tenants/acme/bills/2026-10/department/research.json"
    cases = {
        f"{server}/v1/tenants/acme/bills/2026-13/department/x.json": (400, "month '2026-13' is not YYYY-MM (01-12)"),
        f"{bill}?rating=garbage": (400, "rating 'garbage' must be as-billed or rerated:<run id>"),
        f"{server}/v1/tenants/acme/bills/2026-10/department/research.xls": (
            400,
            "'research.xls': the format must be one of json, csv, pdf",
        ),
        f"{server}/v1/tenants/acme/allocations/2026-10.json?method=magic": (
            400,
            "method 'magic' must be one of direct, proportional, weighted, hybrid",
        ),
        f"{server}/v1/tenants/acme/allocations/2026-10.json?party=planet": (
            400,
            "party 'planet' must be one of project, department, source",
        ),
        f"{server}/v1/nowhere": (404, "no route /v1/nowhere"),
    }
    for url, want in cases.items():
        status, headers, body = get(url, token)
        assert headers["Content-Type"].startswith("application/json"), url
        assert (status, orjson.loads(body)["error"]["message"]) == want, url
    req = urllib.request.Request(bill, data=b"{}", method="POST", headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 405 and orjson.loads(err.value.read())["error"]["code"] == 405
    # The scheme is case-insensitive (RFC 7235).
    lower = urllib.request.Request(bill, headers={"Authorization": f"bearer {token}"})
    with urllib.request.urlopen(lower, timeout=30) as resp:
        assert resp.status == 200
    # A period without an exchange rate: a JSON answer naming the missing rate, not a dropped connection.
    old = orjson.loads(EVENTS[0])
    old["id"], old["time"] = "evt-1971", "1971-01-05T10:00:00Z"
    old["data"]["request_id"] = "req-1971"
    ingest_raw(store, [orjson.dumps(old)], LayeredPriceTable.from_path())
    dept = old["data"]["labels"]["department"]
    status, _, body = get(f"{server}/v1/tenants/acme/bills/1971-01/department/{dept}.json", token)
    assert status == 422 and orjson.loads(body)["error"]["message"].startswith("no FX rate USD->")
