"""The whole pipeline under real DVC: all seven stages, no-op re-run, a params change, metrics and plots.

    pytest -q tests/test_pipeline_dvc.py      # about 2.5 minutes on 2 cores

One tiny build (fixture ``tiny_pipeline`` of tests/conftest.py: a temporary git + DVC
repo holding this project's dvc.yaml, pipelines/, gan/ and data/raw/, a SQLite MLflow
store, one local Ray made by `gan repro`) is shared by the tests below, which run in file order.
"""

from __future__ import annotations

import compileall
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from .pipeline_repo import ROOT, declared_outputs, dvc, git, ran, skipped, stage_names

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
    charts, images = ("Loss curves", "Discriminator outputs"), ("train/plots/losses.png", "train/plots/d_outputs.png", "eval/samples.png", "eval/per_class.png", "eval/closest.png", "tune/search.png")
    assert set(plots) == {*charts, *images}, sorted(plots)
    y_labels = {"Loss curves": "loss", "Discriminator outputs": "mean sigmoid(D) (1 = judged real)"}
    for plot_id in charts:
        (chart,) = plots[plot_id]
        assert chart["content"]["data"]["values"], f"plot {plot_id!r} has no data"
        spec = json.dumps(chart["content"])  # the axis titles, wherever the template's layers put them
        assert '"title": "training step"' in spec and f'"title": "{y_labels[plot_id]}"' in spec, plot_id
    for plot_id in images:
        (image,) = plots[plot_id]
        assert Path(image["url"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image["url"]
    assert "file://" in dvc(repo, "plots", "show", "-o", str(tmp_path / "html"))
    page = (tmp_path / "html" / "index.html").read_text()
    # the images are files beside the page (shown without a network), each exactly once
    sources = re.findall(r'<img src="([^"]+)"', page)
    for name in ("losses.png", "d_outputs.png", "samples.png", "per_class.png", "closest.png", "search.png"):
        shown = [src for src in sources if src.endswith(name)]
        assert len(shown) == 1, f"{name} is shown {len(shown)} times in the plots page: {sources}"
        assert (tmp_path / "html" / shown[0]).stat().st_size > 0, shown[0]


def test_headline_metrics_apart_from_per_class_detail_and_a_short_exp_show(tiny_pipeline):
    """eval/metrics.json holds no per-class keys; the README's `dvc exp show` view is a few columns wide."""
    repo, _ = tiny_pipeline
    headline = json.loads((repo / "eval/metrics.json").read_text())
    assert not [k for k in headline if k.rpartition("/")[2].isdigit()], sorted(headline)
    assert len(headline) <= 25 and {"fid", "floor/fid", "kid", "recall", "coverage"} <= set(headline)
    classes = json.loads((repo / "eval/per_class.json").read_text())["classes"]
    assert [c["name"] for c in classes] == [str(k) for k in range(10)] and "conditional_accuracy" in classes[0]

    readme = (ROOT / "README.md").read_text()
    (command,) = [line.strip() for line in readme.splitlines() if line.strip().startswith(".venv/bin/dvc exp show")]
    args = shlex.split(command)[1:]
    header = dvc(repo, *args, "--no-pager", "--csv").splitlines()[0].split(",")  # csv: no cut to the terminal's width
    assert set(header) == {"Experiment", "eval/metrics.json:fid", "eval/metrics.json:kid", "recall", "coverage",
                           "train.steps", "train.lr_G", "train.lr_D"}, header  # fmt: skip


def test_byte_identical_rerun_of_prepare_invalidates_nothing_downstream(tiny_pipeline):
    """No wall-clock time in data/prepared/manifest.json or models/features/config.json."""
    repo, _ = tiny_pipeline
    manifest = (repo / "data/prepared/manifest.json").read_bytes()
    assert "seconds" not in json.loads((repo / "models/features/config.json").read_text())["metrics"]
    out = dvc(repo, "repro", "-f", "prepare")
    assert ran(out) == {"prepare"}, out
    assert (repo / "data/prepared/manifest.json").read_bytes() == manifest
    assert json.loads((repo / "prepare/metrics.json").read_text())["seconds"] >= 0
    assert "Data and pipelines are up to date." in dvc(repo, "status")


def test_no_lock_or_store_file_lands_in_the_repository(tiny_pipeline):
    """The promotion lock lives under the ignored mlruns/, not as a new file in the repository root."""
    repo, _ = tiny_pipeline
    tracked = git(repo, "ls-files").splitlines()
    assert not [p for p in tracked if p.endswith(".lock") and p != "dvc.lock" or p.startswith(("mlruns/", "mlflow.db"))], tracked
    untracked = [line[3:] for line in git(repo, "status", "--porcelain", "--untracked-files=all").splitlines() if line.startswith("??")]
    assert not [p for p in untracked if p.endswith(".lock")], untracked


def test_mlflow_runs_span_the_work_and_the_version_links_to_them(tiny_pipeline):
    """From the registered version to the train and tune runs that made it; runs with real durations and sources."""
    from mlflow import MlflowClient

    repo, _ = tiny_pipeline
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # a process-wide registry URI would beat the tracking URI
    # the version the last register named (earlier tests of this module may have registered more)
    decision = json.loads((repo / "registry/decision.json").read_text())
    mv = client.get_model_version("digits-gan", str(decision.get("duplicate_of") or decision["challenger_version"]))
    # a few rows on the registered-model page: provenance, the decision, the eval metric, the
    # privacy gate's two figures and augment_eval's accuracies (not ~60 flattened configs)
    assert len(mv.tags) <= 20, sorted(mv.tags)
    train_run, tune_run = client.get_run(mv.tags["train_run_id"]), client.get_run(mv.tags["tune_run_id"])
    assert mv.tags["train_run_id"] in mv.description and mv.tags["tune_run_id"] in mv.description
    assert train_run.data.tags["stage"] == "train" and tune_run.data.tags["stage"] == "tune"
    assert {"best.lr_G", "best.lr_D"} <= set(tune_run.data.params)
    register_run = client.get_run(mv.run_id)
    for run in (train_run, tune_run, register_run):
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.source.name"].startswith("pipelines/")
    # each run spans the real work: it started before the first file the work wrote (Ray's
    # storage of the training / the search), and register's ended after the scoring that
    # follows the version's creation
    for run, folder in ((train_run, train_run.data.tags["ray_run"]), (tune_run, tune_run.info.run_name)):
        written = [p.stat().st_mtime * 1000 for p in (repo / ".ray_storage" / folder).rglob("*") if p.is_file()]
        assert written and run.info.start_time < min(written) and run.info.end_time > max(written), folder
    assert register_run.info.start_time <= mv.creation_timestamp < register_run.info.end_time


def test_forced_train_reexports_the_finished_run_and_train_fresh_trains_again(tiny_pipeline):
    """`dvc repro -f -s train` resumes the finished run: nothing trained, no throughput, byte-identical
    outputs (so nothing downstream re-runs); with `train.fresh: true` the stage trains again from step 0."""
    repo, _ = tiny_pipeline
    steps = yaml.safe_load((repo / "params.yaml").read_text())["train"]["steps"]
    generator = {p.name: p.read_bytes() for p in (repo / "models/generator").iterdir()}
    out = dvc(repo, "repro", "-f", "-s", "train")  # -s: train alone (-f alone forces its upstream stages too)
    assert ran(out) == {"train"}, out
    forced = json.loads((repo / "train/metrics.json").read_text())
    assert forced["steps"] == steps and forced["steps_trained"] == 0 and "throughput/img_s" not in forced
    assert "nothing to train" in out
    assert {p.name: p.read_bytes() for p in (repo / "models/generator").iterdir()} == generator
    assert "Data and pipelines are up to date." in dvc(repo, "status")

    git(repo, "add", "-A")  # this state, to come back to: the shared repo stays reproduced for later tests
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["fresh"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro", "-s", "train")  # train alone: what follows it is not under test here
    fresh = json.loads((repo / "train/metrics.json").read_text())
    assert ran(out) == {"train"} and fresh["steps_trained"] == steps and fresh["resumed_from_step"] == 0, out
    assert fresh["throughput/img_s"] > 0
    git(repo, "checkout", "--", ".")  # params.yaml, dvc.lock and the uncached train outputs as they were
    dvc(repo, "checkout")  # and the cached ones (the generator) from DVC's cache
    assert {p.name: p.read_bytes() for p in (repo / "models/generator").iterdir()} == generator
    assert "Data and pipelines are up to date." in dvc(repo, "status")


def test_a_first_version_the_gate_refuses_ends_the_pipeline_cleanly(tiny_pipeline):
    """A refusal is a normal outcome of a scheduled run: register records it, augment_eval says there is
    no champion in one line, and the repro exits 0 (here under a new model name with an unreachable bound)."""
    repo, _ = tiny_pipeline
    git(repo, "add", "-A")  # this state, to come back to
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["register"].update(model_name="digits-refused", max_memorisation=0.51)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(repo, "repro")  # raises on a non-zero exit
    assert ran(out) == {"register", "augment_eval"}, out
    decision = json.loads((repo / "registry/decision.json").read_text())
    assert not decision["promoted"] and decision["champion_version"] is None and decision["alias"] == "challenger"
    skipped = json.loads((repo / "augment/metrics.json").read_text())["skipped"]
    assert skipped.startswith("digits-refused has no champion yet: v1 was not promoted (privacy audit: ")
    assert f"augment_eval: skipped: {skipped}" in out and "Traceback" not in out
    git(repo, "checkout", "--", ".")
    dvc(repo, "checkout")
    assert "Data and pipelines are up to date." in dvc(repo, "status")
