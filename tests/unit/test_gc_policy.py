"""The collector settings of the stream processes: parsed strictly, applied once at start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tokenledger.errors import ConfigError
from tokenledger.gc_policy import DEFAULT_THRESHOLD, threshold_from


def test_thresholds_from_the_environment() -> None:
    assert threshold_from(None) == DEFAULT_THRESHOLD == (50_000, 20, 50)
    assert threshold_from("") == DEFAULT_THRESHOLD
    assert threshold_from("default") is None  # CPython's own
    assert threshold_from(" 1000, 10 ,10") == (1000, 10, 10)


@pytest.mark.parametrize("value", ["50000", "1,2,3,4", "0,10,10", "-1,10,10", "a,b,c", "1.5,2,3"])
def test_malformed_thresholds_are_refused_in_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match="TOKENLEDGER_GC_THRESHOLD must be 'default' or three positive integers"):
        threshold_from(value)


@pytest.mark.parametrize(("value", "expected"), [(None, "(50000, 20, 50) True"), ("default", "(700, 10, 10) False")])
def test_applied_in_a_fresh_process(value: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOKENLEDGER_GC_THRESHOLD"}
    if value is not None:
        env["TOKENLEDGER_GC_THRESHOLD"] = value
    code = (
        "import gc; from tokenledger.gc_policy import tune_for_throughput as t;"
        " t(); print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
