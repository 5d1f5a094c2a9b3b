"""Metrics cardinality guard, alert rules (promtool) and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tokenledger import metrics
from tokenledger.metrics import OTHER, REGISTRY, LabelGuard

OBS = Path(__file__).resolve().parents[2] / "infra" / "observability"


def sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_guard_bounds_a_million_label_values() -> None:
    guard = LabelGuard(max_values=50)
    before = sample("tokenledger_label_overflow_total", {"metric": "m", "label": "department"}) or 0.0
    admitted = {guard.admit("m", "department", f"dept-{i}") for i in range(1_000_000)}
    assert len(admitted) == 51  # 50 real values + __other__
    assert OTHER in admitted
    assert guard.admit("m", "department", "dept-7") == "dept-7"  # admitted values stay themselves
    after = sample("tokenledger_label_overflow_total", {"metric": "m", "label": "department"})
    assert after == before + 1_000_000 - 50


def test_per_user_and_per_key_labels_are_refused() -> None:
    for label in ("user", "api_key", "trace_id"):
        with pytest.raises(ValueError, match="high-cardinality"):
            metrics.counter(f"tokenledger_bad_{label}_total", "no", [label])


def test_record_priced_counts_tokens_and_nanos() -> None:
    labels = {"model": "gpt-4o-obs", "department": "obs"}
    metrics.record_priced(
        "gpt-4o-obs", "obs", {"input": 9_000, "cached_read": 1_000, "output": 500, "reasoning": 0}, 24_000_000
    )
    metrics.record_priced("gpt-4o-obs", "obs", {"input": 1, "output": 1}, 12_500)
    assert sample("tokenledger_cost_nanousd_total", labels) == 24_012_500
    assert sample("tokenledger_tokens_total", {"model": "gpt-4o-obs", "type": "input"}) == 9_001
    assert sample("tokenledger_tokens_total", {"model": "gpt-4o-obs", "type": "cached_read"}) == 1_000
    assert sample("tokenledger_tokens_total", {"model": "gpt-4o-obs", "type": "reasoning"}) is None  # zero: no series
    metrics.record_budget("obs-budget", 750_000_000, 1_000_000_000, "throttled")
    assert sample("tokenledger_budget_usage_ratio", {"budget": "obs-budget"}) == 0.75
    assert sample("tokenledger_breaker_state", {"budget": "obs-budget"}) == 2


def _promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("TOKENLEDGER_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is required in CI (Debian package prometheus)")
    return found


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = _promtool()
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus); CI installs it")
    check = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=OBS, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 12 rules found" in check.stdout
    unit = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=OBS, capture_output=True, text=True, check=False
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_dashboard_queries_only_exported_metrics() -> None:
    dash = json.loads((OBS / "grafana-dashboard.json").read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert {"Cost trend (USD per hour)", "Cost by model (USD per hour)", "Budget usage (share of limit)"} <= titles
    exported = {m.name for m in REGISTRY.collect()}
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"tokenledger_[a-z_]+", target["expr"]))
    # Histogram series carry a _bucket suffix; counters are exported without _total.
    normalized = {re.sub(r"_(bucket|total)$", "", u) for u in used}
    assert normalized <= exported, normalized - exported
