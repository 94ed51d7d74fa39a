"""Downstream augmentation: `gan augment`, gan.augment.generate and the augment_eval (CAS) stage.

One module-scoped registry in a SQLite store (the default kind of store): a conditional
model with a good v1 (fitted to the class means) and a bad v2 (random init), champion = v1,
and an unconditional model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan.augment import cli_main, generate
from gan.errors import GanError

from .conftest import ROOT, write_params
from .test_registry import free_port, make_generator, tracking, venv_env

MODEL, UNCOND = "aug-gan", "aug-gan-uncond"


def _log(model_dir: Path, name: str):
    from gan.registry import log_generator

    return log_generator(model_dir, name, params={"p": 1}, metrics={"eval/fid": 1.0}, tags={"git_commit": "test"})


@pytest.fixture(scope="module")
def registry(tmp_path_factory, prepared_digits):
    from mlflow import MlflowClient

    from gan.export import save_generator
    from gan.models import build_G

    root = tmp_path_factory.mktemp("augment")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    good, spec = make_generator(prepared_digits, fit_steps=150)
    bad, bad_spec = make_generator(prepared_digits, fit_steps=0, arch="dcgan")
    save_generator(good, spec, root / "good")
    save_generator(bad, bad_spec, root / "bad")
    G_kwargs = {"z_dim": 8, "out_shape": [1, 8, 8], "width": 16}
    save_generator(build_G("mlp", **G_kwargs), {"arch": "mlp", "G_kwargs": G_kwargs, "z_dim": 8, "num_classes": 0, "channels": 1, "image_size": 8}, root / "uncond")
    with tracking(uri):
        _log(root / "good", MODEL)
        _log(root / "bad", MODEL)
        _log(root / "uncond", UNCOND)
        client = MlflowClient()
        client.set_registered_model_alias(MODEL, "champion", "1")
        client.set_registered_model_alias(UNCOND, "champion", "1")
        yield {"uri": uri, "root": root, "prepared": prepared_digits, "class_names": spec["class_names"]}


# ---------------------------------------------------------------- generate()


def test_generate_is_deterministic_batch_independent_and_resolves_the_alias_once(registry):
    from mlflow import MlflowClient

    stream = generate(f"models:/{MODEL}@champion", 1234, seed=0, batch_size=100)
    assert (stream.model.name, stream.model.version, stream.model.uri) == (MODEL, "1", f"models:/{MODEL}/1")
    x, y = stream.arrays()
    assert x.shape == (1234, 1, 8, 8) and x.dtype == np.uint8 and y.dtype == np.int64
    assert y.tolist() == [i % 10 for i in range(1234)]  # all classes, cycled: balanced
    assert max(len(b[0]) for b in stream) == 100  # streamed in batches

    same = generate(f"models:/{MODEL}@champion", 1234, seed=0, batch_size=1000).arrays()
    assert np.array_equal(same[0], x) and np.array_equal(same[1], y)
    assert not np.array_equal(generate(f"models:/{MODEL}@champion", 1234, seed=1).arrays()[0], x)
    three = generate(f"models:/{MODEL}@champion", 9, labels=["3"], seed=0).arrays()
    assert three[1].tolist() == [3] * 9

    client = MlflowClient()
    client.set_registered_model_alias(MODEL, "champion", "2")  # moved while the job runs
    try:
        again = stream.arrays()
        assert np.array_equal(again[0], x)  # the job keeps the version it resolved at the start
        assert generate(f"models:/{MODEL}@champion", 5, seed=0).model.version == "2"
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")


# ---------------------------------------------------------------- gan augment


def test_augment_to_npz_and_image_folder(registry, tmp_path):
    npz_dir, png_dir = tmp_path / "npz", tmp_path / "png"
    model = f"models:/{MODEL}@champion"
    assert cli_main(["--model", model, "--num", "4", "--per-class", "--labels", "3", "7", "--out", str(npz_dir), "--format", "npz", "--seed", "5", "--no-progress"]) == 0
    with np.load(npz_dir / "samples.npz", allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    assert x.shape == (8, 1, 8, 8) and x.dtype == np.uint8
    assert sorted(y.tolist()) == [3] * 4 + [7] * 4
    meta = json.loads((npz_dir / "metadata.json").read_text())
    assert (meta["model_version"], meta["resolved_uri"], meta["model_uri"], meta["seed"], meta["n"]) == ("1", f"models:/{MODEL}/1", model, 5, 8)

    assert cli_main(["--model", model, "--num", "4", "--per-class", "--labels", "3", "7", "--out", str(png_dir), "--format", "image_folder", "--seed", "5", "--no-progress"]) == 0
    files = sorted(png_dir.rglob("*.png"))
    assert [p.parent.name for p in files] == ["3"] * 4 + ["7"] * 4  # one folder per class name
    for path in files:  # the same seed gives the same pixels in both formats
        assert np.array_equal(np.asarray(Image.open(path)), x[int(path.stem), 0])
    assert json.loads((png_dir / "metadata.json").read_text())["format"] == "image_folder"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_unconditional_model_writes_a_flat_folder_and_refuses_per_class(registry, tmp_path):
    out = tmp_path / "flat"
    assert cli_main(["--model", f"models:/{UNCOND}@champion", "--num", "7", "--out", str(out), "--format", "image_folder", "--seed", "0", "--no-progress"]) == 0
    assert len(list(out.glob("*.png"))) == 7 and not [p for p in out.iterdir() if p.is_dir()]
    with pytest.raises(GanError, match="--per-class needs a class-conditional generator"):
        cli_main(["--model", f"models:/{UNCOND}@champion", "--num", "7", "--per-class", "--out", str(tmp_path / "x"), "--no-progress"])
    assert not (tmp_path / "x").exists()


BAD_INPUTS = [
    (["--model", "models:/no-such-gan@champion"], "registered model 'no-such-gan' does not exist"),
    (["--model", f"models:/{MODEL}@nightly"], "has no alias 'nightly'"),
    (["--model", f"models:/{MODEL}@champion", "--labels", "12"], "label 12 is unknown to this generator"),
    (["--model", f"models:/{MODEL}@champion", "--labels", "cat"], "label 'cat' is unknown to this generator"),
    (["--model", f"models:/{UNCOND}@champion", "--labels", "1"], "this generator is unconditional"),
    (["--model", f"models:/{MODEL}@champion", "--num", "0"], r"n = 0 is invalid"),
    (["--model", f"models:/{MODEL}@champion", "--num", "-3"], r"n = -3 is invalid"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=["name", "alias", "label", "label-name", "uncond-label", "n=0", "n<0"])
def test_bad_input_is_one_sentence_and_writes_nothing(registry, tmp_path, args, message):
    out = tmp_path / "out"
    argv = ["--num", "5", *args] if "--num" not in args else list(args)
    with pytest.raises(GanError, match=message) as err:
        cli_main([*argv, "--out", str(out), "--no-progress"])
    assert "\n" not in str(err.value) and str(err.value).endswith(".")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_missing_store_and_non_empty_output(registry, tmp_path):
    out = tmp_path / "out"
    argv = ["--model", f"models:/{MODEL}@champion", "--num", "5", "--out", str(out), "--no-progress"]
    with tracking(f"http://127.0.0.1:{free_port()}"), pytest.raises(GanError, match="is not reachable"):
        cli_main(argv)
    missing = tmp_path / "nowhere" / "mlflow.db"
    with tracking(f"sqlite:///{missing}"), pytest.raises(GanError, match="does not exist; run the register stage"):
        cli_main(argv)
    assert list(tmp_path.iterdir()) == []  # not even an empty SQLite file
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(GanError, match="exists and is not empty"):
        cli_main(argv)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_gan_cli_exits_non_zero_with_one_line(registry, tmp_path):
    env = venv_env(MLFLOW_TRACKING_URI=registry["uri"])
    cmd = [sys.executable, "-m", "gan.cli", "augment", "--model", f"models:/{MODEL}@champion", "--num", "0", "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: n = 0 is invalid; ask for at least one sample (a positive whole number)."]


# ---------------------------------------------------------------- augment_eval (CAS)


def test_augment_eval_stage_end_to_end(registry, tmp_path):
    from mlflow import MlflowClient

    from gan.stages import augment_eval

    params = write_params(tmp_path / "params.yaml", register={"model_name": MODEL},
                          augment_eval={"real_per_class": 5, "synthetic_per_class": 20, "epochs": 8, "batch_size": 32})  # fmt: skip
    runs = {}
    for version in ("champion", "2"):
        out = tmp_path / version / "metrics.json"
        argv = ["--params", str(params), "--data", str(registry["prepared"]), "--out", str(out)]
        assert augment_eval.main([*argv, "--model", f"models:/{MODEL}@champion" if version == "champion" else f"models:/{MODEL}/2"]) == 0
        runs[version] = json.loads(out.read_text())
    good, bad = runs["champion"], runs["2"]
    assert good["model_version"] == "1" and good["real_train"] == 50 and good["synthetic_train"] == 200
    for m in (good, bad):
        assert all(0.0 <= m[k] <= 1.0 for k in ("accuracy/real", "accuracy/real_plus_synthetic", "accuracy/synthetic"))
        assert m["gain"] == pytest.approx(m["accuracy/real_plus_synthetic"] - m["accuracy/real"])
    assert good["accuracy/real"] == bad["accuracy/real"]  # (a) does not involve the generator
    # class-mean samples teach a classifier the digits; a random generator's do not
    assert good["accuracy/synthetic"] > 0.5 > bad["accuracy/synthetic"] + 0.2
    tags = MlflowClient().get_model_version(MODEL, "1").tags
    assert float(tags["augment/accuracy/synthetic"]) == pytest.approx(good["accuracy/synthetic"])


def test_augment_eval_refuses_an_unconditional_champion(registry, tmp_path):
    from gan.stages import augment_eval

    params = write_params(tmp_path / "params.yaml", register={"model_name": UNCOND})
    out = tmp_path / "augment" / "metrics.json"
    with pytest.raises(GanError, match="is unconditional; augment_eval needs a class-conditional generator"):
        augment_eval.main(["--params", str(params), "--data", str(registry["prepared"]), "--out", str(out)])
    assert not out.parent.exists()
