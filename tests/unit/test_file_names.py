"""Bill file names: one value, one name; different values never share one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from billing.jobs import file_part


def test_examples() -> None:
    assert file_part("ml/platform") == "ml%2Fplatform"
    assert file_part("ml_platform") == "ml_platform"
    assert file_part("研发中心") == "%E7%A0%94%E5%8F%91%E4%B8%AD%E5%BF%83"
    assert file_part("..") == "%%2E%2E"
    assert file_part("") == "%"
    long = file_part("x" * 200)
    assert len(long) == 80 and long.startswith("x" * 63 + "~")


@given(st.text(max_size=30), st.text(max_size=30))
def test_injective_and_one_path_component(a: str, b: str) -> None:
    fa, fb = file_part(a), file_part(b)
    assert "/" not in fa and fa not in ("", ".", "..")
    assert (fa == fb) == (a == b)
