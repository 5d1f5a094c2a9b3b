"""The finance console in a real browser: Debian's Chromium driven by Playwright.

Sign in, open every page, switch a chart, download a PDF, sign out; figures on the pages equal
the JSON bills to the cent; another tenant's pages and files answer 403. Screenshots are kept
in ``out/test-artifacts/console/``.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import sync_playwright

from billing.context import BillingContext
from billing.http_api import BillingServer
from tests.billing_fixture import EVENTS, _ev
from tokenledger.control.files import DEFAULT_CONTROL, ControlFile
from tokenledger.control.state import ControlState
from tokenledger.money import display_money
from tokenledger.pricing import LayeredPriceTable
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.ingest import ingest_raw

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts" / "console"
CJK = "研发中心"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("TOKENLEDGER_REQUIRE_CHROMIUM"),  # CI installs and requires it
    reason="Debian's chromium is not installed",
)


@pytest.fixture
def console(store: ChdbStore) -> Iterator[str]:
    events = [
        *EVENTS,
        _ev("z1", "2026-10-12T05:00:00Z", dept=CJK, feature="摘要", input_tokens=5000, output_tokens=700),
    ]
    ingest_raw(store, events, LayeredPriceTable.from_path())
    ctx = BillingContext.default(clock=lambda: datetime(2026, 10, 21, 1, tzinfo=UTC))
    srv = BillingServer(store, ctx, ControlState.from_records(ControlFile.load(DEFAULT_CONTROL).records())).start()
    yield srv.url
    srv.stop()


def api(url: str, token: str = "demo-acme-token") -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return orjson.loads(resp.read())  # type: ignore[no-any-return]


def test_sign_in_every_page_figures_download_and_isolation(console: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    bill = api(f"{console}/v1/tenants/acme/bills/2026-10/tenant/acme.json")
    research = api(f"{console}/v1/tenants/acme/bills/2026-10/department/research.json")
    hybrid = api(f"{console}/v1/tenants/acme/allocations/2026-10.json?method=hybrid&party=project")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        # Not signed in: the console sends the browser to the sign-in form; a wrong token stays there.
        page.goto(f"{console}/console/t/acme/overview")
        assert page.url.endswith("/console/login")
        page.fill("#token", "not-a-token")
        page.click("button[type=submit]")
        assert "not a billing token" in page.inner_text("[role=alert]")
        page.fill("#token", "demo-acme-token")
        page.click("button[type=submit]")
        page.wait_for_url("**/console/t/acme/overview")
        cookie = next(c for c in page.context.cookies() if c["name"] == "tl_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # Overview: the month's total equals the tenant's JSON bill, in USD and in CNY.
        page.goto(f"{console}/console/t/acme/overview?month=2026-10")
        assert page.inner_text("#total-usd") == display_money(bill["summary"]["cost_nanos"], "USD")
        assert page.inner_text("#total-local") == display_money(bill["summary"]["cost_nanos_local"], "CNY")
        assert page.inner_text("#total-usd") == "1.36 USD"
        assert page.locator("svg.chart rect").count() >= 7  # one bar per day with spend
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

        # Spend: switch the stack from department to model; the per-value table adds up to the bill.
        page.goto(f"{console}/console/t/acme/spend?month=2026-10")
        assert page.get_attribute("#spend-chart", "data-by") == "department"
        assert CJK in page.inner_text("#spend-by")
        page.click(".tabs a:text-is('model')")
        page.wait_for_url("**by=model**")
        assert page.get_attribute("#spend-chart", "data-by") == "model"
        models = page.inner_text("#spend-by")
        for m in bill["by_model"]:
            assert m["model"] in models
        assert page.inner_text("#spend-total") == display_money(bill["summary"]["cost_nanos"], "USD")
        top = page.locator("#top-requests tbody tr")
        assert top.count() == 8 and "req-e3" in top.first.inner_text()  # the deepseek million-token call
        page.screenshot(path=str(ARTIFACTS / "spend-by-model.png"), full_page=True)

        page.goto(f"{console}/console/t/acme/budgets")
        assert page.locator("#budgets tbody tr").count() == 5
        page.screenshot(path=str(ARTIFACTS / "budgets.png"), full_page=True)

        # Bills: each scope's figure equals its JSON bill; the PDF downloads.
        page.goto(f"{console}/console/t/acme/bills?month=2026-10")
        rows = {
            tuple(r.locator("td").all_inner_texts()[:2]): r.locator("td").all_inner_texts()[3]
            for r in page.locator("#bills tbody tr").all()
        }
        assert rows[("tenant", "acme")] == display_money(bill["summary"]["cost_nanos"], "USD")
        assert rows[("department", "research")] == display_money(research["summary"]["cost_nanos"], "USD")
        assert ("department", CJK) in rows
        with page.expect_download() as dl:
            page.locator("#bills tbody tr", has_text="research").first.locator("a", has_text="PDF").click()
        pdf = tmp_path / "bill.pdf"
        dl.value.save_as(pdf)
        assert pdf.read_bytes().startswith(b"%PDF-")
        assert dl.value.suggested_filename == "bill-acme-2026-10-department-research.pdf"
        page.screenshot(path=str(ARTIFACTS / "bills.png"), full_page=True)

        # Allocation: four methods side by side; each column adds up to the traced amount of the JSON split.
        page.goto(f"{console}/console/t/acme/allocation?month=2026-10")
        total_row = page.locator("#allocation tbody tr").last.locator("td").all_inner_texts()
        assert total_row[1:] == [display_money(hybrid["amount_nanos"], "USD")] * 4
        assert page.inner_text("#traced-share").startswith(
            f"Traced spend to split: {display_money(hybrid['amount_nanos'], 'USD')} of "
            f"{display_money(bill['summary']['cost_nanos'], 'USD')}"
        )
        page.screenshot(path=str(ARTIFACTS / "allocation.png"), full_page=True)

        page.goto(f"{console}/console/t/acme/advice?month=2026-10")
        assert page.locator("#break-even tbody tr").count() == 5
        assert "DeepSeek" in page.inner_text("#break-even")
        page.screenshot(path=str(ARTIFACTS / "advice.png"), full_page=True)

        # Another tenant's pages and files: 403, with the session of acme.
        resp = page.goto(f"{console}/console/t/globex/overview")
        assert resp is not None and resp.status == 403
        assert orjson.loads(resp.body())["error"]["code"] == 403
        resp = page.goto(f"{console}/v1/tenants/globex/bills/2026-10/tenant/globex.json")
        assert resp is not None and resp.status == 403

        # A phone-width screen: nothing wider than the screen but the tables, which scroll in place.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{console}/console/t/acme/overview?month=2026-10")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(ARTIFACTS / "overview-phone.png"), full_page=True)

        # Sign out: the session is gone, the pages send the browser to the sign-in form again.
        page.click("header button[type=submit]")
        page.wait_for_url("**/console/login")
        page.goto(f"{console}/console/t/acme/overview")
        assert page.url.endswith("/console/login")
        browser.close()


def test_pages_answer_bearer_clients_and_refuse_without_a_token(console: str) -> None:
    req = urllib.request.Request(f"{console}/console/t/acme/bills?month=2026-10")
    req.add_header("Authorization", "Bearer demo-globex-token")
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("another tenant's token was served")
    except urllib.error.HTTPError as err:
        assert err.code == 403 and orjson.loads(err.read())["error"]["code"] == 403
    req = urllib.request.Request(f"{console}/console/t/acme/bills?month=2026-10")
    req.add_header("Authorization", "Bearer demo-acme-token")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200 and "研发中心" in resp.read().decode()
    for bad, message in (
        ("month=2026-13", "month '2026-13' is not YYYY-MM (01-12)"),
        ("by=secret", "by 'secret' must be one of department, project, model, feature"),
    ):
        page = "spend" if bad.startswith("by") else "overview"
        req = urllib.request.Request(f"{console}/console/t/acme/{page}?{bad}")
        req.add_header("Authorization", "Bearer demo-acme-token")
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError(bad)
        except urllib.error.HTTPError as err:
            assert (err.code, orjson.loads(err.read())["error"]["message"]) == (400, message)
