"""docs/examples: each one a complete params file that runs as its header says.

    pytest -q tests/test_examples.py      # a few seconds; no pipeline run

A user copies an example over params.yaml and runs ``gan repro``; DVC then needs every key
dvc.yaml names, so each example holds every key of params.yaml (scripts/examples.py keeps
them in step). tests/test_task_pipelines.py runs them through the pipeline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gan.config import load_params

from .conftest import ROOT

EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))


def keys(tree: Any, prefix: str = "") -> set[str]:
    """Every key path of a params tree (``train.stylegan2.pl_weight``), mappings only (``prepare.pairs`` may be null)."""
    if not isinstance(tree, dict):
        return set()
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        out |= keys(value, f"{path}.")
    return out


def test_the_examples_are_in_step_with_params_yaml():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "examples.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_an_example_is_a_complete_valid_params_file_with_its_commands(example: Path):
    base = keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    mine = keys(yaml.safe_load(example.read_text()))
    assert base - mine == set(), f"{example.name} lacks keys that dvc.yaml may name"
    params = load_params(example)
    header = [line for line in example.read_text().splitlines() if line.startswith("#")]
    assert f"#   cp docs/examples/{example.name} params.yaml && gan repro" in header
    (downstream,) = [line for line in header if line.startswith("#   gan ")]
    assert f"models:/{params.register.model_name}@champion" in downstream
