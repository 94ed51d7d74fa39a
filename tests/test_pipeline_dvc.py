"""The whole pipeline under real DVC: all seven stages, no-op re-run, a params change, metrics and plots.

    pytest -q tests/test_pipeline_dvc.py      # about 2.5 minutes on 2 cores

One tiny build (fixture ``tiny_pipeline`` of tests/conftest.py: a temporary git + DVC
repo holding this project's dvc.yaml, pipelines/, gan/ and data/raw/, a SQLite MLflow
store, local Ray) is shared by the tests below, which run in file order.
"""

from __future__ import annotations

import compileall
import json
from pathlib import Path

import pytest
import yaml

from .pipeline_repo import declared_outputs, dvc, ran, skipped, stage_names

pytestmark = pytest.mark.slow

UPSTREAM_OF_TRAIN = {"prepare", "featurize", "tune"}
TRAIN_AND_AFTER = {"train", "evaluate", "register", "augment_eval"}


def test_repro_runs_every_stage_and_writes_every_output(tiny_pipeline):
    repo, out = tiny_pipeline
    assert ran(out) == set(stage_names(repo)) == UPSTREAM_OF_TRAIN | TRAIN_AND_AFTER, out
    missing = [path for path in declared_outputs(repo) if not (repo / path).exists()]
    assert not missing, f"outputs declared in dvc.yaml but not written: {missing}"
    for path in ("models/generator/model.safetensors", "models/generator/config.json", "eval/samples.png",
                 "tune/best.json", "train/history.csv", "data/prepared/manifest.json"):
        assert (repo / path).stat().st_size > 0, path
    decision = json.loads((repo / "registry/decision.json").read_text())
    assert decision["promoted"] and decision["alias"] == "champion" and decision["challenger_version"] == "1"
    assert json.loads((repo / "eval/metrics.json").read_text())["fid"] > 0
    assert json.loads((repo / "train/metrics.json").read_text())["steps"] == 40
    augment = json.loads((repo / "augment/metrics.json").read_text())
    assert augment, "augment/metrics.json is empty"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(stage_names(repo))


def test_second_repro_runs_nothing(tiny_pipeline):
    repo, _ = tiny_pipeline
    # bytecode caches appear inside directory deps (gan/models, ...) whenever Python imports
    # them (a fresh clone has none); .dvcignore keeps them out of the hashes
    compileall.compile_dir(str(repo / "gan"), quiet=1, legacy=False)
    assert list((repo / "gan" / "models" / "__pycache__").glob("*.pyc"))
    out = dvc(repo, "repro")
    assert not ran(out), out
    assert skipped(out) == set(stage_names(repo)), out
    assert "Data and pipelines are up to date." in dvc(repo, "status")


def test_train_param_change_reruns_train_and_downstream_only(tiny_pipeline):
    repo, _ = tiny_pipeline
    before = {path: (repo / path).read_bytes() for path in ("data/prepared/manifest.json", "models/features/config.json", "tune/best.json")}
    out = dvc(repo, "exp", "run", "-S", "train.steps=30")
    assert ran(out) == TRAIN_AND_AFTER, out
    assert skipped(out) == UPSTREAM_OF_TRAIN, out
    assert json.loads((repo / "train/metrics.json").read_text())["steps"] == 30
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["steps"] == 30
    assert {path: (repo / path).read_bytes() for path in before} == before
    # the second version is registered; it becomes champion only if it scores better
    assert json.loads((repo / "registry/decision.json").read_text())["challenger_version"] == "2"
    assert "Data and pipelines are up to date." in dvc(repo, "status")


def test_metrics_and_plots_show(tiny_pipeline, tmp_path):
    repo, _ = tiny_pipeline
    metrics = dvc(repo, "metrics", "show")
    for path in ("eval/metrics.json", "train/metrics.json", "tune/metrics.json", "augment/metrics.json", "featurize/metrics.json"):
        assert path in metrics, metrics
    shown = json.loads(dvc(repo, "metrics", "show", "--json"))
    (workspace,) = shown.values()  # one revision: the workspace
    assert workspace["data"]["eval/metrics.json"]["data"]["fid"] > 0
    assert workspace["data"]["train/metrics.json"]["data"]["steps"] > 0

    plots = json.loads(dvc(repo, "plots", "show", "--json", "-o", str(tmp_path / "plots")))["data"]
    expected = {"Loss curves", "Discriminator outputs", "Tuning search", "eval/samples.png", "tune/search.png"}
    assert expected <= set(plots), sorted(plots)
    for plot_id in ("Loss curves", "Discriminator outputs", "Tuning search"):
        (chart,) = plots[plot_id]
        assert chart["content"]["data"]["values"], f"plot {plot_id!r} has no data"
    for plot_id in ("eval/samples.png", "tune/search.png"):
        (image,) = plots[plot_id]
        assert Path(image["url"]).stat().st_size > 0, image["url"]
    assert "file://" in dvc(repo, "plots", "show", "-o", str(tmp_path / "html"))
    assert (tmp_path / "html" / "index.html").stat().st_size > 0
