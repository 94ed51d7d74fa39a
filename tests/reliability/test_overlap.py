"""An output that is, contains or lies inside an input is refused before anything is touched.

Before: ``prepare.out`` set to ``prepare.path`` or to a folder above it replaced the raw
images with shards and exited 0. Every stage and CLI command that writes a directory (or
a file) now compares its outputs with its inputs (and with each other) first.
"""

from __future__ import annotations

import importlib

import pytest

from gan.errors import ConfigError

from ..conftest import write_params
from .conftest import assert_one_line_error, leftovers, run_stage, tree
from .test_bad_input import image_folder


def test_prepare_output_over_the_raw_images_is_refused_and_the_images_survive(tmp_path):
    """The probe's cases as the user runs them: prepare.out = prepare.path, a folder above it, one inside it."""
    raw = image_folder(tmp_path / "data" / "raw")
    before = tree(tmp_path / "data")
    cases = {"is": str(raw), "contains": str(tmp_path / "data"), "lies inside": str(raw / "cat" / "prepared")}
    for rel, out in cases.items():
        params = write_params(tmp_path / "params.yaml", prepare={"source": "image_folder", "path": str(raw), "image_size": 8, "out": out})
        check = run_stage(["-m", "gan.cli", "check"], "--params", str(params))  # gan check already refuses it, naming both keys
        assert_one_line_error(check, f"prepare.out: {out} {rel} prepare.path = {raw}")
        params = write_params(tmp_path / "params.yaml", prepare={"source": "image_folder", "path": str(raw), "image_size": 8})
        proc = run_stage("prepare", "--params", str(params), "--out", out)  # and the stage refuses --out the same way
        assert_one_line_error(proc, f"--out = {out} {rel} the input prepare.path = {raw}", "choose an output")
        assert tree(tmp_path / "data") == before and leftovers(raw.parent) == [] and leftovers(raw) == []


# (stage, flags that make an output overlap an input): in-process through the stage's main(),
# each refused before the stage reads its data, starts Ray or touches MLflow
STAGE_CASES = {
    "prepare-params-below-out": ("prepare", lambda d: ["--out", str(d)]),  # the params file lies in the output
    "featurize-out-is-data": ("featurize", lambda d: ["--data", str(d / "prepared"), "--out", str(d / "prepared")]),
    "featurize-metrics-in-data": ("featurize", lambda d: ["--data", str(d / "prepared"), "--metrics", str(d / "prepared" / "m.json")]),
    "tune-out-is-features": ("tune", lambda d: ["--data", str(d / "prepared"), "--features", str(d / "features"), "--out", str(d / "features")]),
    "train-model-out-is-data": ("train", lambda d: ["--data", str(d / "prepared"), "--model-out", str(d / "prepared")]),
    "train-out-contains-model-out": ("train", lambda d: ["--data", str(d / "prepared"), "--out", str(d / "o"), "--model-out", str(d / "o" / "samples")]),
    "evaluate-out-is-model": ("evaluate", lambda d: ["--data", str(d / "prepared"), "--model", str(d / "generator"), "--out", str(d / "generator")]),
    "register-out-in-model": ("register", lambda d: ["--data", str(d / "prepared"), "--model", str(d / "generator"), "--out", str(d / "generator" / "config.json")]),
    "augment_eval-out-in-data": ("augment_eval", lambda d: ["--data", str(d / "prepared"), "--out", str(d / "prepared" / "manifest.json")]),
}


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_every_stage_refuses_an_output_overlapping_an_input(tmp_path, monkeypatch, case):
    stage, flags = STAGE_CASES[case]
    for name in ("prepared", "features", "generator"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "prepared" / "manifest.json").write_text("{}")
    params = write_params(tmp_path / "params.yaml", train={"storage_path": str(tmp_path / "ray")}, tune={"storage_path": str(tmp_path / "ray")})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    before = tree(tmp_path)
    main = importlib.import_module(f"pipelines.{stage}").main
    with pytest.raises(ConfigError) as err:
        main(["--params", str(params), *flags(tmp_path)])
    message = str(err.value)
    assert message.startswith("the output ") and "choose an output that neither is, contains nor lies inside" in message
    assert message.count(". ") == 0 and message.endswith(".")
    assert tree(tmp_path) == before  # nothing written, the MLflow store not even created


def test_symlinked_spelling_of_the_input_is_the_same_place(tmp_path):
    """Two spellings of one folder (a symlink, ``..``) are recognised as one place."""
    raw = image_folder(tmp_path / "raw")
    (tmp_path / "alias").symlink_to(raw)
    params = write_params(tmp_path / "params.yaml", prepare={"source": "image_folder", "path": str(raw), "image_size": 8})
    before = tree(raw)
    for out in (tmp_path / "alias", tmp_path / "raw" / "cat" / ".." / ".." / "raw"):
        proc = run_stage("prepare", "--params", str(params), "--out", str(out))
        assert_one_line_error(proc, f"--out = {out} is the input prepare.path = {raw}")
    assert tree(raw) == before
