"""``python -m billing control export|apply`` and ``fx import``: the README's block, as written, on the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from infra.workers import kafka_env
from tests.readme import block
from tokenledger.control.follow import follow, seed_records
from tokenledger.kafka_config import KafkaSettings
from tokenledger.store.chdb_store import ChdbStore
from tokenledger.store.migrations import migrate

ECB = """Date,USD,JPY,CNY,
2026-11-27,1.0500,160.00,7.5600,
2026-11-26,1.0400,N/A,7.5000,
"""


def _migrated(path: Path) -> None:
    store = ChdbStore(path)
    try:
        migrate(store)
    finally:
        store.close()


def run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_export_apply_and_fx_import_as_the_readme_says(kafka: KafkaSettings, tmp_path: Path) -> None:
    seeded = follow(kafka, seed=seed_records())  # what a first worker does
    seeded.close()
    _migrated(tmp_path / "chdb")
    (tmp_path / "eurofxref-hist.csv").write_text(ECB)
    env = {**os.environ, **kafka_env(kafka), "TOKENLEDGER_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}
    script = block("control export > control.yaml").replace(".venv/bin/python", sys.executable)
    done = run(script, tmp_path, env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "no changes",  # the dry run of what was just exported
        "no changes",  # and its apply: idempotent
        "2 day(s) 2026-11-26 .. 2026-11-27, 3 pair(s) (USD/CNY, USD/EUR, USD/JPY); 3 record(s) written",
    ]
    exported = yaml.safe_load((tmp_path / "control.yaml").read_text())
    assert [b["id"] for b in exported["budgets"]][:2] == ["acme-agents-day", "acme-copilot-prod-day"]
    assert {k["id"] for k in exported["keys"]} == {
        "demo-acme",
        "demo-globex",
        "demo-acme-billing",
        "demo-globex-billing",
    }

    # A team's change in git: one budget raised, one added, with --prune a key removed.
    exported["budgets"][0]["limit_usd"] = "25"
    exported["budgets"].append(
        {"id": "acme-ops-day", "tenant": "acme", "scope": {"department": "ops"}, "period": "day", "limit_usd": "5"}
    )
    exported["keys"] = [k for k in exported["keys"] if k["id"] != "demo-globex"]
    (tmp_path / "control.yaml").write_text(yaml.safe_dump(exported, allow_unicode=True))
    cli = [sys.executable, "-m", "billing", "control", "apply", "control.yaml"]
    dry = subprocess.run(
        [*cli, "--prune", "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "~ budget acme-agents-day: limit_usd: '20' -> '25'",
        "+ budget acme-ops-day",
        "- key demo-globex",
        "3 change(s), not applied (--dry-run)",
    ]
    applied = subprocess.run([*cli, "--prune"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-2:] == [
        "3 change(s) applied",
        "1 new budget(s) start from their period's spend in the store",
    ]
    again = subprocess.run([*cli, "--prune"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert again.stdout.splitlines() == ["no changes"]

    state = follow(kafka)
    try:
        assert str(state.state.budgets["acme-agents-day"].limit_usd) == "25"
        assert state.state.budgets["acme-ops-day"].counts_from is not None
        assert "demo-globex" not in state.state.keys
        assert state.state.fx["USD-CNY-2026"].rates == {"2026-11-26": "7.2115384615", "2026-11-27": "7.2000000000"}
        assert state.state.fx["USD-JPY-2026"].rates == {"2026-11-27": "152.3809523810"}
    finally:
        state.close()
