"""The README's code blocks, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def block(containing: str, lang: str = "bash") -> str:
    """The one fenced block of ``lang`` whose text contains ``containing``."""
    found = [m.group(2) for m in _FENCE.finditer(README.read_text()) if m.group(1) == lang and containing in m.group(2)]
    assert len(found) == 1, f"{len(found)} {lang} blocks of the README contain {containing!r}"
    return found[0]
