"""``gan retrain``: the lock (exit 75, or queueing with --wait), the one-line summary.

    pytest -q tests/test_retrain.py      # about three minutes with the shared pipeline repo built

The slow tests run the real command on the real DVC repo of the ``tiny_pipeline``
fixture (tests/conftest.py), where it runs ``dvc repro``; the fast ones check the
summary line and the lock without DVC.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from gan.errors import GanError
from gan.retrain import BUSY_EXIT, LOCK, RetrainBusy, retrain, summary

from .pipeline_repo import BIN, env_for

DECISION = {"model_name": "digits-gan", "metric": "fid", "min_improvement": 0.0}


def write_decision(root: Path, **fields) -> Path:
    (root / "registry").mkdir(exist_ok=True)
    (root / "registry" / "decision.json").write_text(json.dumps({**DECISION, **fields}))
    return root


def test_summary_lines(tmp_path):
    repro_all = "Running stage 'train':\nRunning stage 'register':\n"
    first = write_decision(tmp_path, promoted=True, challenger_version="1", challenger_score=40.0, champion_version=None, champion_score=None)
    assert summary(first, repro_all) == "retrain: promoted digits-gan v1 to champion (fid 40 (first version))."
    assert summary(first, "Stage 'train' didn't change, skipping\n") == "retrain: nothing changed; champion digits-gan v1 stays."
    better = write_decision(tmp_path, promoted=True, challenger_version="3", challenger_score=11.2, champion_version="2", champion_score=12.9)
    assert summary(better, repro_all) == "retrain: promoted digits-gan v3 to champion (fid 11.2, was 12.9)."
    worse = write_decision(tmp_path, promoted=False, challenger_version="4", challenger_score=13.4, champion_version="3", champion_score=12.9)
    assert summary(worse, repro_all) == "retrain: kept champion digits-gan v3 (fid 12.9); challenger v4 scored 13.4, not better by 0%."
    assert summary(worse, "") == "retrain: nothing changed; champion digits-gan v3 stays."
    assert summary(worse, "Running stage 'prepare':\n") == "retrain: ran prepare; no new model to register; champion digits-gan v3 stays."
    # a refusal (the privacy gate) is a normal ending, with or without a champion: its reason, no traceback
    reason = "privacy audit: dcr_share/pixel = 0.710 exceeds register.max_memorisation = 0.6 by 0.110"
    refused = write_decision(tmp_path, promoted=False, challenger_version="1", challenger_score=40.0, champion_version=None, champion_score=None,
                             reason=reason)  # fmt: skip
    assert summary(refused, repro_all) == f"retrain: digits-gan has no champion yet; v1 was not promoted ({reason})."
    assert summary(refused, "") == "retrain: nothing changed; digits-gan has no champion yet."
    kept = write_decision(tmp_path, promoted=False, challenger_version="5", challenger_score=10.0, champion_version="3", champion_score=12.9,
                          reason=reason)  # fmt: skip
    assert summary(kept, repro_all) == f"retrain: kept champion digits-gan v3; challenger v5 was not promoted ({reason})."
    (tmp_path / "registry" / "decision.json").unlink()
    assert "registry/decision.json is missing" in summary(tmp_path, repro_all)


def test_busy_lock_raises_exit_75_and_creates_nothing(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with FileLock(str(tmp_path / LOCK)):  # what a running retrain holds
        with pytest.raises(RetrainBusy) as err:
            retrain(tmp_path, wait=0)
    assert err.value.exit_code == BUSY_EXIT == 75 and isinstance(err.value, GanError)
    assert str(tmp_path / LOCK) in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK, "dvc.yaml"])


def gan_retrain(repo: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "gan"), "retrain", *args], cwd=repo, env=env_for(repo),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for_log(repo: Path, proc: subprocess.Popen, count: int) -> list[Path]:
    """Wait until ``count`` retrain logs exist (a retrain opens its log once it holds the lock)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = sorted((repo / "logs").glob("retrain-*.log")) if (repo / "logs").exists() else []
        if len(logs) >= count:
            return logs
        assert proc.poll() is None, f"gan retrain exited {proc.returncode} before taking the lock: {proc.communicate()}"
        time.sleep(0.2)
    raise AssertionError("gan retrain did not open its log within 120 s")


@pytest.mark.slow
def test_retrain_with_nothing_changed_prints_one_line(tiny_pipeline):
    repo, _ = tiny_pipeline
    lock_before = (repo / "dvc.lock").read_bytes()
    decision = json.loads((repo / "registry/decision.json").read_text())
    proc = subprocess.run([str(BIN / "gan"), "retrain"], cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [f"retrain: nothing changed; champion digits-gan v{champion(decision)} stays."]
    assert (repo / "dvc.lock").read_bytes() == lock_before
    log = sorted((repo / "logs").glob("retrain-*.log"))[-1].read_text()
    assert "$ dvc repro" in log and "Running stage" not in log


def champion(decision: dict) -> str:
    return decision["challenger_version"] if decision["promoted"] else decision["champion_version"]


# ---------------------------------------------------------------- a real data registry


def make_data_registry(root: Path, per_class: int) -> Path:
    """A git + DVC repo holding labelled PNGs (data/digits/<class>/*.png) pushed to a local-directory remote."""
    from .pipeline_repo import dvc, git

    registry = root / "data-registry"
    registry.mkdir(parents=True)
    git(registry, "init", "-q")
    git(registry, "config", "user.email", "ci@example.com")
    git(registry, "config", "user.name", "ci")
    dvc(registry, "init", "-q")
    dvc(registry, "remote", "add", "-d", "storage", str(root / "remote"))
    add_images(registry, 0, per_class)
    return registry


def add_images(registry: Path, start: int, per_class: int) -> None:
    """Write ``per_class`` more 8x8 digits per class as PNG (from sklearn's bundled set), then dvc add, commit and push."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from .pipeline_repo import dvc, git

    digits = load_digits()
    for label in range(10):
        folder = registry / "data" / "digits" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(digits.target == label)[start : start + per_class]
        for row in rows:
            Image.fromarray((digits.images[row] * 255 / 16).astype(np.uint8)).save(folder / f"{row:04d}.png")
    dvc(registry, "add", "data/digits")
    git(registry, "add", "-A")
    git(registry, "commit", "-qm", f"digits {start}..{start + per_class} per class")
    dvc(registry, "push")


@pytest.mark.slow
def test_retrain_from_a_data_registry_picks_up_a_new_version_holds_the_lock_and_fails_clearly_when_it_is_gone(tiny_pipeline, tmp_path):
    """The recommended set-up of docs/retraining.md, end to end: `dvc import` from a git + DVC data registry
    with a local-directory remote; the images committed and pushed there after the import are what the
    next `gan retrain` trains on. While that retrain runs, a second one exits 75 and one started with
    --wait queues behind it (one pipeline run serves both checks: each run costs minutes here)."""
    import shutil

    from .pipeline_repo import dvc, git

    repo, _ = tiny_pipeline
    logs_before = len(list((repo / "logs").glob("retrain-*.log"))) if (repo / "logs").exists() else 0
    version_before = int(json.loads((repo / "registry/decision.json").read_text())["challenger_version"])
    registry = make_data_registry(tmp_path, per_class=20)
    dvc(repo, "import", str(registry), "data/digits", "-o", "data/raw/digits")
    assert len(list((repo / "data/raw/digits").rglob("*.png"))) == 200
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"].update(source="image_folder", path="data/raw/digits")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "train on the data registry's digits")
    add_images(registry, 20, per_class=10)  # the registry's next version, pushed after the import: 300 images

    first = gan_retrain(repo)
    wait_for_log(repo, first, logs_before + 1)
    second = subprocess.run([str(BIN / "gan"), "retrain"], cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=120)
    assert second.returncode == 75, second
    assert second.stdout == ""
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith("error: another retrain is running") and str(repo / LOCK) in line and "--wait" in line
    assert len(list((repo / "logs").glob("retrain-*.log"))) == logs_before + 1, "the refused retrain wrote a log"

    queued = gan_retrain(repo, "--wait", "900")
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err
    # still waiting when the first one finished (a queued retrain that did not wait would
    # have exited 75 at once, while the first one was still running its stages)
    assert queued.poll() is None or queued.returncode == 0, queued.communicate()
    (line,) = out.strip().splitlines()
    assert line.startswith((f"retrain: promoted digits-gan v{version_before + 1} to champion", "retrain: kept champion digits-gan v")), line
    counts = json.loads((repo / "prepare/metrics.json").read_text())
    assert counts["train_images"] + counts["val_images"] == 300
    log = sorted((repo / "logs").glob("retrain-*.log"))[logs_before].read_text()
    assert "$ dvc update data/raw/digits.dvc" in log and "Running stage 'prepare'" in log
    decision = json.loads((repo / "registry/decision.json").read_text())
    assert int(decision["challenger_version"]) == version_before + 1, "exactly one new model version, from the first retrain"

    out, err = queued.communicate(timeout=900)
    assert queued.returncode == 0, err
    assert out.strip().splitlines() == [f"retrain: nothing changed; champion digits-gan v{champion(decision)} stays."]
    assert len(list((repo / "logs").glob("retrain-*.log"))) == logs_before + 2
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "retrained")

    # the registry goes away: one sentence, a non-zero exit (2, like every GanError), nothing changed
    lock, imported = (repo / "dvc.lock").read_bytes(), (repo / "data/raw/digits.dvc").read_bytes()
    shutil.move(registry, tmp_path / "moved")
    proc = subprocess.run([str(BIN / "gan"), "retrain"], cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "", proc
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: the data registry behind data/raw/digits.dvc (") and str(registry) in line and line.endswith(".")
    assert (repo / "dvc.lock").read_bytes() == lock and (repo / "data/raw/digits.dvc").read_bytes() == imported
    shutil.move(tmp_path / "moved", registry)
