"""A throw-away copy of this project as a git + DVC repo with a tiny params.yaml.

    repo = make_pipeline_repo(tmp / "repo")        # git init, dvc init, one commit
    out = dvc(repo, "repro")                         # the whole pipeline, about a minute

Used by tests/test_pipeline_dvc.py and tests/test_retrain.py (through the session
fixture ``tiny_pipeline`` of tests/conftest.py) and by bench/dvc_noop.py. The copy runs
its own ``gan/`` (PYTHONPATH), so the code DVC hashes is the code that runs; MLflow is a
SQLite file inside the repo and Ray a local instance per Ray stage (RAY_ADDRESS unset), or
one for the whole run under ``gan repro``.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# What the whole pipeline needs to run (dvc.yaml's deps); nothing else is copied.
COPIED = ("gan", "pipelines", "data/raw", "dvc.yaml", ".gitignore", ".dvcignore")

# params.yaml's values for a pipeline that runs end to end in about a minute on 2 cores:
# 8x8 digits, 16-wide nets, 2 tune trials of 20 steps, 40 train steps, a few hundred
# samples for the metrics. Every key of the project's params.yaml stays present, since
# dvc.yaml names exact keys and DVC fails on a missing one.
TINY: dict[str, dict[str, Any]] = {
    "prepare": {"image_size": 8},
    "model": {"z_dim": 16, "g_width": 16, "d_width": 16},
    "featurize": {"epochs": 2, "width": 16, "feature_dim": 32},
    "tune": {"num_samples": 2, "max_steps": 20, "eval_every": 10, "eval_samples": 100, "max_concurrent_trials": 2},
    "train": {"batch_size": 32, "steps": 40, "checkpoint_every": 20, "sample_every": 20, "log_every": 10,
              "eval_every": 0, "eval_samples": 200, "divergence_patience": 20},
    "evaluate": {"num_samples": 300, "kid_subset_size": 100},
    # a 40-step generator is far from every real image, which the privacy audit's share
    # cannot tell from copying (docs/benchmarks.md): no gate for this mechanics-only pipeline
    "register": {"eval_samples": 300, "max_memorisation": None},
    "augment_eval": {"real_per_class": 5, "synthetic_per_class": 10, "epochs": 2},
}


def tiny_params(**sections: dict[str, Any]) -> dict[str, Any]:
    """The project's params.yaml with :data:`TINY` applied, then ``sections`` on top."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for changes in (TINY, sections):
        for name, values in copy.deepcopy(changes).items():
            raw[name].update(values)
    return raw


def env_for(repo: Path) -> dict[str, str]:
    """The environment of every command run in ``repo``: the venv first, local Ray, repo-local MLflow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(repo),  # the copy's gan/, not the checkout's (the editable install)
        MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}",
        DVC_NO_ANALYTICS="1",
        GIT_PYTHON_REFRESH="quiet",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    return env


def run(repo: Path, *cmd: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``repo``; with ``check`` a failure shows its whole output."""
    proc = subprocess.run(list(cmd), cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(repo: Path, *args: str, timeout: float = 600) -> str:
    """``dvc <args>`` in ``repo``; its stdout and stderr together."""
    proc = run(repo, str(BIN / "dvc"), *args, timeout=timeout)
    return proc.stdout + proc.stderr


def git(repo: Path, *args: str) -> str:
    return run(repo, "git", *args).stdout


def copy_project(repo: Path, names: tuple[str, ...] = COPIED) -> Path:
    """``names`` of this checkout (files or folders, without bytecode) copied into a new folder ``repo``."""
    repo.mkdir(parents=True)
    for name in names:
        src, dst = ROOT / name, repo / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return repo


def make_pipeline_repo(repo: Path, **sections: dict[str, Any]) -> Path:
    """A fresh git + DVC repo at ``repo`` with this project's pipeline and tiny params, committed."""
    copy_project(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(**sections), sort_keys=False))
    return init_repo(repo, "pipeline")


def init_repo(repo: Path, message: str) -> Path:
    """``repo`` made a git + DVC repository with everything in it committed as ``message``."""
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "ci@example.com")
    git(repo, "config", "user.name", "ci")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return repo


def stage_names(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def declared_outputs(repo: Path) -> list[str]:
    """Every path dvc.yaml declares as a stage's outs, metrics or plots."""
    paths = []
    for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def ran(output: str) -> set[str]:
    """The stages a ``dvc repro`` / ``dvc exp run`` output says it ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def skipped(output: str) -> set[str]:
    """The stages it says did not change."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Stage '") and "didn't change" in line}
