"""``python -m infra up`` / ``down`` as an operator runs them: everything ready, a bill over HTTP, a clean stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from tests.integration.test_billing_service import get
from tests.integration.test_stream_pipeline import wait_for
from tests.readme import block
from tokenledger.money import display_money
from tokenledger.store.chdb_store import ChdbStore


def post_chat(gateway: str, token: str) -> int:
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 40})
    req = urllib.request.Request(
        gateway + "/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.status)


def test_up_serves_bills_and_down_stops_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENLEDGER_")}  # the embedded defaults
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "infra", "up", "--data", str(data)], env=env, stdout=log, stderr=log)
    try:
        record = data / "run" / "up.json"
        wait_for(record.exists, 300, "`up` to report the pipeline up", alive=lambda: up.poll() is None)
        state = json.loads(record.read_text())
        services = state["services"]
        assert sorted(services) == ["billing", "gateway", "ingest", "pricing worker", "spend worker", "upstream"]
        for service in services.values():
            assert get(service["ready"], None)[0] == 200
        for _ in range(3):
            assert post_chat(services["gateway"]["url"], "sk-demo-research-copilot") == 200
        month = time.strftime("%Y-%m", time.gmtime(time.time() + 8 * 3600))  # billing months are Asia/Shanghai
        bill_url = f"{services['billing']['url']}/v1/tenants/acme/bills/{month}/department/research.json"

        def billed() -> bool:
            status, body = get(bill_url)
            return status == 200 and orjson.loads(body)["summary"]["requests"] == 3

        wait_for(billed, 120, "the three gateway calls on the bill")
        # The README's operator commands, as written (with this run's ports): a fourth call, the PDF.
        script = block("localhost:8088/v1/tenants/acme/bills")
        for readme_url, name in (("localhost:8080", "gateway"), ("localhost:8088", "billing")):
            script = script.replace(readme_url, services[name]["url"].removeprefix("http://"))
        done_readme = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env={**env, "TMPDIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done_readme.returncode == 0, done_readme.stderr
        assert (tmp_path / "research.pdf").read_bytes().startswith(b"%PDF-")

        def billed4() -> bool:
            status, body = get(bill_url)
            return status == 200 and orjson.loads(body)["summary"]["requests"] == 4

        wait_for(billed4, 60, "the README's call on the bill")
        summary = orjson.loads(get(bill_url)[1])["summary"]
        # The README's admin API block: a budget created, raised, listed and deleted, a key issued.
        admin = block("localhost:8088/v1/admin/budgets/acme-support-month").replace(
            "localhost:8088", services["billing"]["url"].removeprefix("http://")
        )
        done_admin = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", admin], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done_admin.returncode == 0, done_admin.stderr
        answers, text, decoder = [], done_admin.stdout.strip(), json.JSONDecoder()
        while text:  # curl prints the answers back to back
            doc, end = decoder.raw_decode(text)
            answers.append(doc)
            text = text[end:].strip()
        assert [a.get("limit_usd") for a in answers[:2]] == ["50", "80"]
        assert answers[2]["secret"].startswith("ti_") and answers[2]["tenant"] == "acme"
        assert "acme-support-month" in {b["id"] for b in answers[3]["budgets"]}
        assert answers[4] == {"deleted": "acme-support-month"}
        # The README's rate limit, live in the gateway: its next answers carry the limit's headers.
        limit = block("admin/limits/copilot-rpm").replace(
            "localhost:8088", services["billing"]["url"].removeprefix("http://")
        )
        done_limit = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", limit], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done_limit.returncode == 0, done_limit.stderr

        calls = [0]

        def limited() -> bool:
            calls[0] += 1
            req = urllib.request.Request(
                services["gateway"]["url"] + "/v1/chat/completions",
                data=orjson.dumps(
                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
                ),
                headers={"Authorization": "Bearer sk-demo-research-copilot", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                return bool(resp.headers.get("x-ratelimit-limit-requests") == "600")

        wait_for(limited, 30, "the README's rate limit in the gateway's headers")

        def billed_all() -> bool:
            status, body = get(bill_url)
            return status == 200 and orjson.loads(body)["summary"]["requests"] == 4 + calls[0]

        wait_for(billed_all, 60, "every call on the bill")
        summary = orjson.loads(get(bill_url)[1])["summary"]
        # The console URL `up` prints answers, and its month total is the bill's tenant total.
        console = f"{services['billing']['url']}/console"
        assert (
            f"console    {console} (sign in with a billing token: demo-acme-token)" in (tmp_path / "up.log").read_text()
        )
        tenant_bill = orjson.loads(
            get(f"{services['billing']['url']}/v1/tenants/acme/bills/{month}/tenant/acme.json")[1]
        )
        status, page = get(f"{console}/t/acme/overview")
        total = display_money(tenant_bill["summary"]["cost_nanos"])
        assert status == 200 and f'<span id="total-usd">{total}</span>'.encode() in page
    finally:
        done = subprocess.run(
            [sys.executable, "-m", "infra", "down", "--data", str(data)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        code = up.wait(300)
        log.close()
    assert done.returncode == 0 and done.stdout.startswith("stopped the pipeline"), done
    assert code == 0, (tmp_path / "up.log").read_text()[-2000:]
    out = (tmp_path / "up.log").read_text()
    for name in ("ingest", "gateway", "upstream", "billing", "spend worker", "pricing worker"):
        assert f"stopped {name} (exit 0)" in out
    assert "stopped kafka" in out
    store = ChdbStore(data / "chdb")  # every process let go of the embedded store
    try:
        rows, nanos = store.query(
            "SELECT count(), sum(cost_nanos) FROM usage_events FINAL WHERE tenant = 'acme' AND department = 'research'"
        ).rows[0]
    finally:
        store.close()
    assert (rows, nanos) == (summary["requests"], summary["cost_nanos"])
    assert nanos > 0
