"""Bad input: each kind fails with one sentence and a non-zero exit, through the real stage
script or `gan` CLI in a subprocess, and leaves the previous outputs as they were.

Kinds already covered in-process elsewhere (tests/test_prepare.py, tests/test_config.py,
tests/test_augment.py) are run here once more as the user runs them: as a process.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gan.errors import GanError

from ..conftest import write_params
from .conftest import assert_one_line_error, leftovers, run_stage, tree

# ---------------------------------------------------------------- raw images (prepare)


def image_folder(root: Path, per_class: int = 6, size: tuple[int, int] = (12, 10)) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture()
def previous_prepare(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A finished prepare output (digits, 8x8) whose bytes must survive every failed run."""
    params = write_params(tmp_path / "ok.yaml")
    out = tmp_path / "prepared"
    proc = run_stage("prepare", "--params", str(params), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, tree(out)


BAD_FILES = {
    "corrupt": lambda good: b"\x89PNG\r\n\x1a\n" + b"garbage" * 20,
    "truncated": lambda good: good[: len(good) // 2],
    "zero_byte": lambda good: b"",
    "not_an_image": lambda good: b"name,label\ncat,1\n",
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_image_file_fails_the_prepare_stage_by_name(tmp_path, previous_prepare, kind):
    out, before = previous_prepare
    raw = image_folder(tmp_path / "raw")
    bad = raw / "dog" / ("notes.csv" if kind == "not_an_image" else "bad.png")
    bad.write_bytes(BAD_FILES[kind]((raw / "dog" / "0.png").read_bytes()))
    params = write_params(tmp_path / "params.yaml", prepare={"source": "image_folder", "path": str(raw), "image_size": 8})
    proc = run_stage("prepare", "--params", str(params), "--out", str(out))
    assert_one_line_error(proc, str(bad), "on_bad_file: skip")
    assert proc.returncode == 2
    assert tree(out) == before and leftovers(tmp_path) == []


def test_mixed_sizes_and_modes_are_converted(tmp_path):
    """Every PIL mode a folder of real-world images holds, at odd sizes, becomes [C, S, S] in [-1, 1]."""
    from gan.config import PrepareConfig
    from gan.data import load_split, prepare_dataset

    raw = tmp_path / "raw"
    rng = np.random.default_rng(1)
    shapes = {"L": (9, 31), "RGB": (40, 17, 3), "RGBA": (13, 13, 4), "LA": (20, 5, 2), "I;16": (16, 16), "1": (30, 30), "P": (21, 14), "CMYK": (8, 8, 4)}  # fmt: skip
    for c in ("a", "b"):
        (raw / c).mkdir(parents=True)
        for mode, shape in shapes.items():
            if mode == "I;16":
                img = Image.fromarray(rng.integers(0, 65535, shape, dtype=np.uint16))
            elif mode in ("1", "P"):
                img = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), "L").convert(mode)
            else:
                img = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), "RGBA" if mode == "CMYK" else mode)
                img = img.convert("CMYK") if mode == "CMYK" else img
            img.save(raw / c / f"{mode.replace(';', '_')}.{'jpg' if mode == 'CMYK' else 'png'}")
        Image.fromarray(rng.integers(0, 255, (1, 1), dtype=np.uint8), "L").save(raw / c / "tiny.webp")
    for channels in (1, 3):
        m = prepare_dataset(PrepareConfig(source="image_folder", path=str(raw), image_size=8, channels=channels, val_fraction=0.2), tmp_path / f"out{channels}")
        x, y = load_split(tmp_path / f"out{channels}", "train")
        assert x.shape[1:] == (channels, 8, 8) and np.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
        assert m["counts"]["train"]["total"] + m["counts"]["val"]["total"] == 2 * (len(shapes) + 1) and m["skipped"] == []


# ---------------------------------------------------------------- arrays (npz source)


NPZ_CASES = {
    "x_nan": ({"x": np.full((6, 8, 8), np.nan, np.float32)}, "NaN or inf"),
    "x_inf": ({"x": np.where(np.eye(8, dtype=bool), np.inf, 0.5)[None].repeat(6, 0)}, "NaN or inf"),
    "y_nan": ({"x": np.zeros((6, 8, 8), np.float32), "y": np.array([0, 1, np.nan, 0, 1, 0])}, "integer class labels"),
    "y_negative": ({"x": np.zeros((6, 8, 8), np.uint8), "y": np.array([0, 1, -3, 0, 1, 0])}, "negative label -3"),
    "y_length": ({"x": np.zeros((6, 8, 8), np.uint8), "y": np.array([0, 1])}, "y has shape (2,)"),
    "object_array": ({"x": np.array([None, "a"] * 3, dtype=object)}, "cannot be read as .npz"),
}


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_bad_arrays_fail_the_prepare_stage(tmp_path, previous_prepare, case):
    out, before = previous_prepare
    arrays, message = NPZ_CASES[case]
    np.savez(tmp_path / "data.npz", **arrays)
    params = write_params(tmp_path / "params.yaml", prepare={"source": "npz", "path": str(tmp_path / "data.npz"), "image_size": 8})
    proc = run_stage("prepare", "--params", str(params), "--out", str(out))
    assert_one_line_error(proc, "data.npz", message)
    assert tree(out) == before and leftovers(tmp_path) == []


def test_label_outside_the_manifest_classes_fails_before_use(tmp_path, prepared_digits, featurized_digits, small_registry):
    """A prepared shard edited to hold label 10 of 10 classes: the evaluate stage names the shard."""
    data = tmp_path / "prepared"
    shutil.copytree(prepared_digits, data)
    y_path = data / "val" / "y-00000.npy"
    y = np.load(y_path)
    y[3] = 10
    np.save(y_path, y)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"fid": 1.0}\n')
    params = write_params(tmp_path / "params.yaml")
    proc = run_stage("evaluate", "--params", str(params), "--data", str(data), "--model", str(small_registry["good"]),
                     "--features", str(featurized_digits), "--out", str(out))  # fmt: skip
    assert_one_line_error(proc, str(y_path), "label 10", "0..9")
    assert tree(out) == {"metrics.json": b'{"fid": 1.0}\n'}


# ---------------------------------------------------------------- params.yaml


PARAM_KINDS = {
    "wrong_type": ("train:\n  steps: many\n", "train.steps = 'many' is invalid: must be a valid integer"),
    "fractional_int": ("train:\n  steps: 1.5\n", "train.steps = 1.5 is invalid"),
    "null_value": ("train:\n  steps: null\n", "train.steps = None is invalid"),
    "out_of_range": ("train:\n  lr_D: -1\n", "train.lr_D = -1 is invalid: must be greater than 0"),
    "upper_bound": ("prepare:\n  val_fraction: 1.0\n", "prepare.val_fraction = 1.0 is invalid: must be less than 1"),
    "not_allowed": ("model:\n  arch: vit\n", "model.arch = 'vit' is invalid: allowed values are"),
    "not_boolean": ("train:\n  use_gpu: maybe\n", "train.use_gpu = 'maybe' is invalid: must be a valid boolean"),
    "unknown_key": ("train:\n  lr_g: 0.1\n", "unknown key 'train.lr_g' in train"),
    "unknown_section": ("trian:\n  steps: 5\n", "unknown key 'trian' in top level"),
    "section_not_mapping": ("train: 5\n", "train = 5 is invalid"),
    "nested_range": ("model:\n  infogan:\n    categorical: -1\n", "model.infogan.categorical = -1 is invalid"),
    "range_order": ("tune:\n  lr_D: [0.01, 0.001]\n", "tune.lr_D = [0.01, 0.001] is invalid"),
    "range_length": ("tune:\n  lr_G: [0.1]\n", "tune.lr_G = [0.1] is invalid: must be a list of exactly two numbers"),
    "power_of_two": ("prepare:\n  image_size: 12\n", "prepare.image_size = 12 is invalid: must be a power of two"),
    "missing_dependency": ("prepare:\n  source: image_folder\n", "prepare.path: source 'image_folder' needs a path"),
    "cross_section": ("model:\n  arch: mlp\nprepare:\n  image_size: 8\ntrain:\n  diffaugment: flip\n", "unknown policy 'flip'"),
}


@pytest.mark.parametrize("kind", list(PARAM_KINDS))
def test_invalid_param_kind_fails_gan_check(tmp_path, kind):
    text, message = PARAM_KINDS[kind]
    (tmp_path / "params.yaml").write_text(text)
    proc = run_stage(["-m", "gan.cli", "check"], "--params", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert_one_line_error(proc, message)
    assert proc.returncode == 2


# Values that passed `gan check` and then crashed a stage (numpy refusing a negative seed,
# `train.seed: -1` after 80 s of Ray retries, ASHA's "grace_period must be <= max_t!"), or
# that would make a stage fail or do nothing useful: every constraint a stage relies on is
# checked by the config, named by key.
CROSS_KEY = {
    "negative_prepare_seed": ("prepare: {seed: -1}\n", "prepare.seed = -1 is invalid: must be greater than or equal to 0"),
    "negative_evaluate_seed": ("evaluate: {seed: -3}\n", "evaluate.seed = -3 is invalid"),
    "negative_train_seed": ("train: {seed: -1}\n", "train.seed = -1 is invalid"),
    "seed_beyond_numpy": ("tune: {seed: 4294967296}\n", "tune.seed = 4294967296 is invalid: must be less than or equal to 4294967295"),
    "asha_grace_beyond_evaluations": ("tune: {grace_period: 4, max_steps: 300, eval_every: 100}\n", "tune.grace_period: 4 evaluations is more than the 3 a trial makes"),
    "max_steps_below_eval_every": ("tune: {max_steps: 50, eval_every: 100}\n", "tune.max_steps: 50 is smaller than tune.eval_every = 100"),
    "pbt_never_perturbs": ("tune: {scheduler: pbt, perturbation_interval: 3, max_steps: 300, eval_every: 100}\n", "tune.perturbation_interval: 3 evaluations is not less than the 3"),
    "searched_beta1_reaching_1": ("tune: {beta1: [0.5, 1.0]}\n", "tune.beta1: the range [0.5, 1.0] reaches 1.0, but train.beta1 must be below 1"),
    "searched_n_critic_of_0": ("tune: {n_critic: [0, 2]}\n", "tune.n_critic: [0, 2] holds 0, but train.n_critic must be at least 1"),
    "nearest_k_beyond_samples": ("evaluate: {nearest_k: 50}\nregister: {eval_samples: 40}\n", "evaluate.nearest_k: 50 needs more than that many samples but register.eval_samples = 40"),
    "too_few_eval_samples_in_training": ("train: {eval_samples: 4}\n", "train.eval_samples: 4 samples are too few"),
    "prepare_out_is_path": ("prepare: {source: image_folder, path: raw, out: raw}\n", "prepare.out: raw is prepare.path = raw"),
    "prepare_out_holds_ray_storage": ("prepare: {out: data}\ntrain: {storage_path: data/ray}\n", "prepare.out: data contains train.storage_path = data/ray"),
    "model_name_with_alias_sign": ("register: {model_name: gan@x}\n", "register.model_name = 'gan@x' is invalid: must start with a letter or digit"),
    "model_name_with_slash_and_space": ("register: {model_name: a/b c}\n", "register.model_name = 'a/b c' is invalid"),
}


@pytest.mark.parametrize("kind", list(CROSS_KEY))
def test_constraint_a_stage_relies_on_fails_gan_check(tmp_path, kind):
    text, message = CROSS_KEY[kind]
    (tmp_path / "params.yaml").write_text(text)
    proc = run_stage(["-m", "gan.cli", "check"], "--params", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert_one_line_error(proc, message)
    assert proc.returncode == 2


def test_data_too_small_to_split_fails_prepare_saying_what_it_needs(tmp_path, previous_prepare):
    """Before: a class of one image passed prepare with no validation example of it, and
    featurize then advised re-running prepare, which could not help."""
    out, before = previous_prepare
    raw = image_folder(tmp_path / "raw", per_class=3)
    for extra in ("1.png", "2.png"):
        (raw / "dog" / extra).unlink()
    labelled = write_params(tmp_path / "labelled.yaml", prepare={"source": "image_folder", "path": str(raw), "image_size": 8})
    proc = run_stage("prepare", "--params", str(labelled), "--out", str(out))
    assert_one_line_error(proc, "class 'dog' has 1 readable image but needs at least 2", "add images to that class or remove it")
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(raw / "cat" / "0.png", flat / "only.png")
    unlabelled = write_params(tmp_path / "flat.yaml", prepare={"source": "image_folder", "path": str(flat), "image_size": 8})
    proc = run_stage("prepare", "--params", str(unlabelled), "--out", str(out))
    assert_one_line_error(proc, "the data has 1 readable image but needs at least 2")
    assert tree(out) == before and leftovers(tmp_path) == []


def test_image_folder_layout_rule_counts_and_lists_what_is_left_out(tmp_path):
    """Before: images in sub-folders of a class folder and loose images beside the class
    folders were dropped silently (20 of 23 in the probe). The rule now: a class folder's
    images count at any depth; files beside class folders and hidden entries are left out,
    counted on the console and listed in the manifest."""
    raw = image_folder(tmp_path / "raw", per_class=2)
    (raw / "cat" / "indoor" / "2020").mkdir(parents=True)
    for i in range(3):
        shutil.copy(raw / "cat" / "0.png", raw / "cat" / "indoor" / "2020" / f"n{i}.png")
    shutil.copy(raw / "dog" / "0.png", raw / "loose.png")
    (raw / "README.txt").write_text("about these images")
    (raw / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    params = write_params(tmp_path / "params.yaml", prepare={"source": "image_folder", "path": str(raw), "image_size": 8})
    proc = run_stage("prepare", "--params", str(params), "--out", str(tmp_path / "prepared"))
    assert proc.returncode == 0, proc.stderr
    assert "3 ignored (listed in manifest.json)" in proc.stdout
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["counts"]["train"]["total"] + manifest["counts"]["val"]["total"] == 7  # 5 cats (2 + 3 nested), 2 dogs
    assert manifest["class_names"] == ["cat", "dog"]
    assert {Path(e["file"]).name: e["reason"] for e in manifest["ignored"]} == {
        "loose.png": "file beside the class folders, so in no class",
        "README.txt": "file beside the class folders, so in no class",
        ".DS_Store": "file hidden",
    }


def test_augment_seed_outside_the_params_range_is_refused():
    """`gan augment --seed` takes the same range as the params' seeds (torch overflowed beyond 2**64)."""
    from gan.augment import cli_main

    for seed in ("-1", str(2**64)):
        with pytest.raises(GanError, match=rf"--seed {seed} is invalid; use a whole number from 0 to 4294967295"):
            cli_main(["--model", "models:/x@champion", "--num", "1", "--out", "unused", "--seed", seed])


NOT_YAML = {
    "unclosed": ("train: [unclosed\n", "is not valid YAML at line"),
    "tab_indent": ("train:\n\tsteps: 5\n", "is not valid YAML at line 2"),
    "a_list": ("- prepare\n- train\n", "must be a mapping of stage sections"),
    "binary": ("\x00\x01\x02 not yaml \x7f", "is not valid YAML"),
}


@pytest.mark.parametrize("kind", list(NOT_YAML))
def test_params_file_that_is_not_yaml_fails_the_stage(tmp_path, previous_prepare, kind):
    out, before = previous_prepare
    text, message = NOT_YAML[kind]
    (tmp_path / "params.yaml").write_text(text)
    proc = run_stage("prepare", "--params", str(tmp_path / "params.yaml"), "--out", str(out))
    assert_one_line_error(proc, str(tmp_path / "params.yaml"), message)
    assert tree(out) == before


# ---------------------------------------------------------------- registry URIs (gan augment)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/rel-gan@nightly", "model 'rel-gan' has no alias 'nightly'; check models:/rel-gan@nightly (aliases: champion)"),
        ("models:/no-such-gan@champion", "registered model 'no-such-gan' does not exist"),
        ("models:/rel-gan/42", "model 'rel-gan' has no version 42"),
        ("models:/rel-gan", "is malformed"),
        ("runs:/abc/model", "is not a registry URI"),
    ],
    ids=["alias", "name", "version", "malformed", "not-registry"],
)
def test_unknown_model_fails_gan_augment(tmp_path, small_registry, uri, message):
    out = tmp_path / "synth"
    proc = run_stage(["-m", "gan.cli", "augment"], "--model", uri, "--num", "5", "--out", str(out), "--no-progress",
                     cwd=tmp_path, MLFLOW_TRACKING_URI=small_registry["uri"])  # fmt: skip
    assert_one_line_error(proc, message)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


# ---------------------------------------------------------------- checkpoints and exported weights


def flip(path: Path, where: str) -> None:
    """Corrupt ``path``: one byte of the header, of the middle (tensor data) or cut it short."""
    data = bytearray(path.read_bytes())
    if where == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
        return
    pos = 20 if where == "header" else len(data) // 2 + 7
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture()
def eval_run(tmp_path, featurized_digits, prepared_digits):
    """A helper running the evaluate stage on a model dir into an existing eval/ that must stay intact."""
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"fid": 1.0}\n')
    params = write_params(tmp_path / "params.yaml")

    def run(model: Path):
        proc = run_stage("evaluate", "--params", str(params), "--data", str(prepared_digits), "--model", str(model),
                         "--features", str(featurized_digits), "--out", str(out))  # fmt: skip
        assert tree(out) == {"metrics.json": b'{"fid": 1.0}\n'}  # the previous evaluation is untouched
        return proc

    return run


@pytest.mark.parametrize("where", ["data", "header", "truncated"])
def test_tampered_exported_weights_fail_the_evaluate_stage(tmp_path, small_registry, eval_run, where):
    model = tmp_path / "generator"
    shutil.copytree(small_registry["good"], model)
    flip(model / "model.safetensors", where)
    assert_one_line_error(eval_run(model), str(model / "model.safetensors"), "corrupt or was tampered with")


def test_exported_weights_of_another_architecture_fail_the_evaluate_stage(tmp_path, small_registry, eval_run):
    """config.json says DCGAN, model.safetensors holds an MLP (checksums consistent: a mix-up, not damage)."""
    from gan.export import file_sha256

    model = tmp_path / "generator"
    shutil.copytree(small_registry["bad"], model)  # the DCGAN
    shutil.copy(small_registry["good"] / "model.safetensors", model / "model.safetensors")  # the MLP's weights
    spec = json.loads((model / "config.json").read_text())
    spec["weights_sha256"] = file_sha256(model / "model.safetensors")
    (model / "config.json").write_text(json.dumps(spec))
    assert_one_line_error(eval_run(model), "does not match the architecture in", "(dcgan)")


def tiny_checkpoint(prepared: Path, arch: str) -> tuple:
    from gan.config import parse_params
    from gan.training import make_trainer
    from gan.training.checkpoint import TrainCheckpoint

    from ..test_train_ray import tiny_raw

    params = parse_params(tiny_raw(Path("/nonexistent"), {"arch": arch, "g_width": 8, "d_width": 8}, steps=2))
    trainer = make_trainer(params, prepared)
    return params, TrainCheckpoint(state=trainer.state_dict(), history=[{"step": 0.0}])


@pytest.mark.parametrize("where", ["data", "header", "truncated", "digest_removed", "unsafe_pickle_with_digest"])
def test_tampered_training_checkpoint_is_refused(tmp_path, prepared_digits, where):
    import hashlib
    import pickle

    from gan.training.checkpoint import DIGEST, STATE, load_checkpoint, save_checkpoint

    _, ckpt = tiny_checkpoint(prepared_digits, "mlp")
    folder = save_checkpoint(ckpt, tmp_path / "ckpt")
    assert load_checkpoint(folder).step == 0
    message = "corrupt or was tampered with"
    if where == "digest_removed":
        (folder / DIGEST).unlink()
        message = "incomplete or was tampered with"
    elif where == "unsafe_pickle_with_digest":  # a consistent digest does not make a non-tensor pickle loadable
        (folder / STATE).write_bytes(pickle.dumps({"step": 0, "object": Path("/")}))
        (folder / DIGEST).write_text(hashlib.sha256((folder / STATE).read_bytes()).hexdigest())
        message = "cannot be loaded"
    else:
        flip(folder / STATE, where)
    with pytest.raises(GanError, match=message) as err:
        load_checkpoint(folder)
    assert str(err.value).startswith(str(folder)) and "\n" not in str(err.value)


def test_training_checkpoint_of_another_architecture_is_refused(prepared_digits):
    from gan.training import fit_task

    _, mlp_ckpt = tiny_checkpoint(prepared_digits, "mlp")
    dcgan_params, _ = tiny_checkpoint(prepared_digits, "dcgan")
    with pytest.raises(GanError, match="the checkpoint was made for a different model"):
        fit_task(dcgan_params, prepared_digits, start=mlp_ckpt, log=None)



def _downstream_loaders() -> dict[str, Any]:
    """Each downstream command's model loader, as its CLI calls it."""
    from gan.augment.stream import generate
    from gan.detect import load
    from gan.translate import load_runner as translate_runner
    from gan.upscale import load_runner as upscale_runner

    return {"augment": lambda model: generate(model, 1), "translate": translate_runner, "score": load, "upscale": upscale_runner}


@pytest.mark.parametrize("command", ["augment", "translate", "score", "upscale"])
def test_every_downstream_command_loads_models_the_same_way(command, tmp_path, monkeypatch):
    """One loader for all: the same URIs accepted, the same sentences, the project's MLflow store (gan score and
    gan translate once read MLflow's default store in the working directory, gan upscale took runs:/ URIs)."""
    load = _downstream_loaders()[command]
    for uri, message in (("runs:/abc/model", "is not a registry URI"), ("models:/rel-gan", "is malformed")):
        with pytest.raises(GanError, match=re.escape(message)):
            load(uri)
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(project / "sub")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(GanError, match=re.escape(f"the MLflow store {project / 'mlflow.db'} does not exist")):
        load("models:/rel-gan@champion")
    assert not (project / "mlflow.db").exists() and not (project / "sub" / "mlflow.db").exists()
    assert not (project / "sub" / "mlruns").exists()
    if command != "augment":  # augment reads the registry only; the others also take an exported folder
        with pytest.raises(GanError, match=r"is neither a models:/ URI nor an exported model folder"):
            load(str(tmp_path / "no-such-model"))
