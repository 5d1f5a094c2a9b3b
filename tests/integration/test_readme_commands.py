"""The README's one-shot commands, run as written against a store filled by the backfill command."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.billing_fixture import EVENTS
from tests.readme import block
from tokenledger.pricing.table import DEFAULT_OVERRIDES

LONG_RUNNING = (" serve ", " schedule ")


def test_readme_commands_run(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(EVENTS) + b"\n")
    shutil.copy(DEFAULT_OVERRIDES, tmp_path / "new.yaml")  # a re-rating file, as an operator would edit
    store = f"chdb://{tmp_path / 'chdb'}"
    python = shlex.quote(sys.executable)
    filled = subprocess.run(
        [sys.executable, "-m", "billing", "--store", store, "backfill", "events.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert filled.returncode == 0 and "requests stored" in filled.stdout, filled.stderr
    text = block(".venv/bin/python -m billing --store chdb://out/chdb bills --month 2026-10")
    ran = 0
    for line in text.splitlines():
        if not line.strip() or any(word in line for word in LONG_RUNNING):
            continue
        command = line.replace(".venv/bin/python", python).replace("chdb://out/chdb", store)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (line, done.stdout[-500:], done.stderr[-1000:])
        ran += 1
    assert ran == 8  # bills, backfill, bill, forecast, allocate, rerate, price, count
