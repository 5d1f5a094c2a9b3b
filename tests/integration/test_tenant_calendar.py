"""Each tenant's own timezone and currency: bill months, daily lines, FX, from the live control state."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from datetime import UTC, datetime

import orjson

from billing.context import BillingContext
from billing.http_api import BillingServer
from tests.factories import event_dict
from tokenledger.control.records import ApiKey, FxDay, Tenant
from tokenledger.control.state import ControlState
from tokenledger.pricing import LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw

# 23:30 UTC on Oct 31 is Nov 1 in Berlin (UTC+1 in winter) and in Shanghai, still Oct 31 in UTC.
EDGE = "2026-10-31T23:30:00Z"
INSIDE = "2026-10-15T12:00:00Z"


def event(tenant: str, n: int, at: str) -> bytes:
    doc = event_dict(request_id=f"{tenant}-{n}", input_tokens=10_000, output_tokens=5_000, cached_read_tokens=0)
    doc["id"], doc["time"], doc["subject"] = f"{tenant}-{n}", at, tenant
    doc["data"]["labels"]["tenant"] = tenant
    return json.dumps(doc).encode()


def token(tenant: str) -> str:
    return f"tok-{tenant}"


def bill(url: str, tenant: str, month: str) -> dict[str, object]:
    req = urllib.request.Request(
        f"{url}/v1/tenants/{tenant}/bills/{month}/tenant/{tenant}.json",
        headers={"Authorization": f"Bearer {token(tenant)}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc: dict[str, object] = orjson.loads(resp.read())
        return doc


def test_bills_follow_each_tenants_timezone_currency_and_imported_rates(store: ChdbStore) -> None:
    ingest_raw(
        store,
        [event(t, i, at) for t in ("initech", "umbrella") for i, at in enumerate((INSIDE, EDGE))],
        LayeredPriceTable.from_path(),
    )
    keys = [
        (
            "key",
            f"k-{t}",
            ApiKey(id=f"k-{t}", tenant=t, kind="billing", sha256=hashlib.sha256(token(t).encode()).hexdigest()),
        )
        for t in ("initech", "umbrella")
    ]
    fx = FxDay(base="USD", quote="EUR", year=2026, rates={"2026-10-14": "0.9000000000", "2026-10-30": "0.9500000000"})
    control = ControlState.from_records(
        [
            ("tenant", "initech", Tenant(id="initech", timezone="Europe/Berlin", currency="EUR")),
            ("tenant", "umbrella", Tenant(id="umbrella", timezone="UTC", currency="USD")),
            ("fx", "USD-EUR-2026", fx),
            *keys,
        ]
    )
    ctx = BillingContext.default(clock=lambda: datetime(2026, 11, 20, tzinfo=UTC))
    srv = BillingServer(store, ctx, control).start()
    try:
        berlin, utc = bill(srv.url, "initech", "2026-10"), bill(srv.url, "umbrella", "2026-10")
        assert (berlin["timezone"], berlin["currency"]) == ("Europe/Berlin", "EUR")
        assert (utc["timezone"], utc["currency"]) == ("UTC", "USD")
        assert berlin["summary"]["requests"] == 1  # type: ignore[index]  # the edge request is November in Berlin
        assert utc["summary"]["requests"] == 2  # type: ignore[index]
        assert bill(srv.url, "initech", "2026-11")["summary"]["requests"] == 1  # type: ignore[index]
        # The Oct 15 line is converted at the last imported rate before it (Oct 14), and says so.
        daily: list[dict[str, object]] = berlin["daily"]  # type: ignore[assignment]
        [line] = daily
        assert (line["fx_rate"], line["fx_rate_date"]) == ("0.9000000000", "2026-10-14")
        assert line["cost_nanos_local"] == int(str(line["cost_nanos"])) * 9 // 10
    finally:
        srv.stop()
