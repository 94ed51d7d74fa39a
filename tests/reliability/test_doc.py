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


def test_probe_counts_in_the_doc_match_its_tables():
    """The summary of "Hardening from an outside probe" (tried / clear error / handled per class)
    equals what the class tables below it hold: a row counts 1, or N when it says *N cases*;
    its outcome starts with "clear error" or "handled"."""
    text = DOC.read_text().split("## Hardening from an outside probe", 1)[1].split("\n## ", 1)[0]
    summary = {name.strip(): tuple(int(v) for v in values) for name, *values in
               re.findall(r"^\| ([^|*]+?) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M)}  # fmt: skip
    total = re.search(r"^\| \*\*Total\*\* \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \|$", text, re.M)
    sections = dict(re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", text, re.M | re.S))
    assert set(summary) == set(sections) and len(sections) >= 7
    counted = {}
    for name, body in sections.items():
        rows = [r for r in re.findall(r"^\| (.+?) \| (.+?) \| `tests/", body, re.M)]
        kinds = {"clear error": 0, "handled": 0}
        for case, outcome in rows:
            n = int(m.group(1)) if (m := re.search(r"\(\*(\d+) cases\*\)", case)) else 1
            kind = next(k for k in kinds if outcome.startswith(k))
            kinds[kind] += n
        counted[name] = (sum(kinds.values()), kinds["clear error"], kinds["handled"])
    assert counted == summary
    assert total and tuple(int(v) for v in total.groups()) == tuple(map(sum, zip(*summary.values(), strict=True)))
