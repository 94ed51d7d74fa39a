"""Rebuild every ``docs/examples/*.yaml`` as a complete params file: params.yaml with the example's values.

    .venv/bin/python scripts/examples.py            # rewrite the examples whose base changed
    .venv/bin/python scripts/examples.py --check    # exit 1 naming each example that is out of date

A user runs an example as its header says (``cp docs/examples/X.yaml params.yaml && gan
repro``), and DVC needs every key that dvc.yaml names, so each example holds every key of
params.yaml. What makes an example is the set of values in which it differs from
params.yaml; this script keeps those (with their own comments), takes everything else,
comments included, from params.yaml, and keeps the example's header. A value that
params.yaml later changes stays as the example had it: an example is a complete file. Run it after editing
params.yaml; tests/test_examples.py fails while an example is out of date. Written here
rather than as a library call because ruamel.yaml's comment-preserving round trip is what
keeps params.yaml's explanations in every example.
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long comment or list
    yaml.indent(mapping=2, sequence=4, offset=2)
    # null as params.yaml writes it (ruamel's default is an empty value)
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def load(path: Path) -> CommentedMap:
    return _yaml().load(path.read_text())


def dump(data: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def overlay(base: CommentedMap, example: CommentedMap) -> CommentedMap:
    """``base`` (a deep copy) with every value of ``example`` set on it, the example's comment beside each."""
    merged = copy.deepcopy(base)
    _merge(merged, example)
    return merged


def _merge(base: CommentedMap, example: CommentedMap) -> None:
    for key, value in example.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
            continue
        differs = key not in base or base[key] != value
        base[key] = copy.deepcopy(value)
        comment = example.ca.items.get(key)
        # the example's own comment says why it differs; on a value it shares with
        # params.yaml, params.yaml's comment stays (so a comment edited there reaches it)
        if differs and comment and _text(comment):
            base.ca.items[key] = copy.deepcopy(comment)


def _text(comment: list[Any]) -> str:
    return "".join(token.value for token in comment if token is not None and hasattr(token, "value"))


def header(example_text: str) -> str:
    """The example's leading comment lines: what it trains, how to run it and its downstream command."""
    lines = []
    for line in example_text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def body(text: str) -> str:
    """``text`` without its leading comment lines."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def rebuilt(path: Path, base: CommentedMap) -> str:
    """The complete text of example ``path`` on ``base``: its header, then params.yaml with its values."""
    text = path.read_text()
    merged = overlay(base, load(path))
    return header(text) + body(dump(merged))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date examples, change nothing")
    args = parser.parse_args(argv)
    base = load(ROOT / "params.yaml")
    stale = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = rebuilt(path, base)
        if text != path.read_text():
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"out of date with params.yaml: {names}; run .venv/bin/python scripts/examples.py", file=sys.stderr)
        return 1
    if not args.check:
        print(f"{len(stale)} example(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
