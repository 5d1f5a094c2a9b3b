"""Every Python snippet of the README compiles, and every name it imports exists."""

from __future__ import annotations

import ast
import importlib
import re

from tests.readme import README

_FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def test_python_snippets_import_what_exists() -> None:
    snippets = _FENCE.findall(README.read_text())
    assert len(snippets) >= 3
    checked = 0
    for code in snippets:
        tree = ast.parse(code)  # compiles
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name} (README)"
                    checked += 1
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
                    checked += 1
    assert checked >= 8
