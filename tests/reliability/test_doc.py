"""docs/reliability.md stays true: every test it names exists."""

from __future__ import annotations

import ast
import re

from ..conftest import ROOT

DOC = ROOT / "docs" / "reliability.md"


def test_every_test_named_in_the_doc_exists():
    names = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", DOC.read_text())
    assert len(names) >= 25
    missing = []
    for path, name in names:
        file = ROOT / path
        defined = {n.name for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.FunctionDef)} if file.exists() else set()
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert missing == []
    # and every test of this suite is in the doc
    suite = {(f"tests/reliability/{p.name}", n.name) for p in (ROOT / "tests" / "reliability").glob("test_*.py") if p.name != "test_doc.py"
             for n in ast.parse(p.read_text()).body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}  # fmt: skip
    assert suite - set(names) == set()
