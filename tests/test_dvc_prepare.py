"""`dvc repro prepare` in a temporary git + DVC repo: runs, caches, and re-runs only on change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import ROOT


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def make_repo(tmp: Path) -> Path:
    """A git + DVC repo holding this project's pipeline, code and params."""
    repo = tmp / "repo"
    repo.mkdir()
    for name in ("gan", "pipelines", "data/raw"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "ci@example.com"], repo)
    _run(["git", "config", "user.name", "ci"], repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "init"], repo)
    return repo


def test_dvc_repro_prepare(tmp_path):
    repo = make_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["image_size"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = _run(["dvc", "repro", "prepare"], repo)
    assert "Running stage 'prepare'" in out
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert manifest["image_size"] == 8
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["prepare"]["params"]["params.yaml"]["prepare"]["image_size"] == 8

    assert "didn't change" in _run(["dvc", "repro", "prepare"], repo)

    params["prepare"]["seed"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert "Running stage 'prepare'" in _run(["dvc", "repro", "prepare"], repo)
    assert json.loads((repo / "data/prepared/manifest.json").read_text())["hash"] != manifest["hash"]
    status = _run(["dvc", "status", "prepare"], repo)
    assert "up to date" in status or "changed" not in status
