"""The upscale task end to end on the bundled photos: pairs, a short run against bicubic,
tiled inference, ``gan upscale`` and a registered model.

    .venv/bin/python -m pytest tests/test_upscale.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from gan.config import parse_params
from gan.errors import ConfigError, GanError

from .conftest import ROOT
from .test_registry import model_server, tracking

PSNR_STEPS, GAN_STEPS = 150, 10


def sr_params(**train: Any) -> Any:
    return parse_params({
        "prepare": {"source": "photos", "channels": 3, "pairs": {"scale": 2, "patch_size": 16, "patches_per_image": 16, "val_size": 32}},
        "model": {"task": "upscale", "upscale": {"blocks": 1, "width": 16, "growth": 8, "d_width": 8, "pretrain_steps": PSNR_STEPS,
                                                 "perceptual": "none"}},
        "train": {"batch_size": 16, "steps": PSNR_STEPS + GAN_STEPS, "log_every": 50, "checkpoint_every": 1000, "sample_every": 1000,
                  "lr_G": 2e-4, "lr_D": 1e-4, "beta1": 0.9, "beta2": 0.99, "seed": 0, **train},
    })  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Any]:
    """Bundled photos as x2 pairs, a short PSNR + GAN run, its export and its validation metrics."""
    from gan.data import prepare_dataset, read_manifest
    from gan.tasks import make_task
    from gan.tasks.base import EvalSettings
    from gan.training import GANTrainer, fit
    from gan.training.outputs import export_generator, generator_spec

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("upscale")
    params = sr_params()
    prepare_dataset(params.prepare, root / "prepared")
    manifest = read_manifest(root / "prepared")
    task = make_task(params, manifest)
    saved: list[Any] = []
    fit(params, root / "prepared", task=task, log=None, report=lambda m, c: saved.append(c) if c else None)
    spec = generator_spec(task, saved[-1], {}, {})
    export_generator(task, saved[-1], spec, root / "model")
    trainer = GANTrainer(params, root / "prepared", task=task)
    trainer.load_state_dict(saved[-1].state)
    nets = trainer.exported_networks()
    metrics = task.evaluate(nets, None, root / "prepared", EvalSettings(num_samples=1))
    return {"root": root, "params": params, "manifest": manifest, "task": task, "nets": nets, "metrics": metrics, "model": root / "model"}


# ---------------------------------------------------------------- data


def test_pairs_are_split_by_image_and_lr_is_the_documented_degradation(trained):
    from gan.data.pairs import degrade
    from gan.data.shards import val_images

    m, data = trained["manifest"], trained["root"] / "prepared"
    assert m["kind"] == "pairs" and m["scale"] == 2 and m["counts"]["train"]["total"] > 0
    val_names = {v["name"] for v in m["val_images"]}
    assert val_names and len(val_names) < 16  # a few whole photos are held out, by image
    hr = np.load(data / "train" / "x-00000.npy")  # [n, 3, 16, 16]
    lr = np.load(data / "train" / "lr-00000.npy")  # [n, 3, 8, 8]
    assert hr.shape[1:] == (3, 16, 16) and lr.shape[1:] == (3, 8, 8) and len(hr) == len(lr)
    for lr_img, hr_img in val_images(data):
        assert lr_img.shape[-2] * 2 == hr_img.shape[-2] and lr_img.shape[-1] * 2 == hr_img.shape[-1]
        # the stored LR is exactly the antialiased bicubic degradation of the stored HR
        hr_u8 = np.round((hr_img[0].transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)
        lr_u8 = np.round((lr_img[0].transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)
        assert np.array_equal(degrade(hr_u8, 2), lr_u8)
    flat = np.full((8, 8, 3), 77, np.uint8)
    assert np.array_equal(degrade(flat, 2), np.full((4, 4, 3), 77, np.uint8))  # a flat image stays flat


def test_bundled_photos_load_without_a_download():
    from gan.data.photos import PHOTOS, load_photo

    for name in PHOTOS:
        img = load_photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3 and min(img.shape[:2]) >= 64, name


@pytest.mark.parametrize(("section", "value", "message"), [
    ("pairs", {"scale": 4, "patch_size": 24}, r"prepare.pairs.patch_size: 24 must be a multiple of 4 x scale \(16\)"),
    ("pairs", {"scale": 3}, r"prepare.pairs.scale = 3 is invalid"),
    ("upscale", {"lr_milestones": [10, 5]}, r"model.upscale.lr_milestones = \[10, 5\] is invalid"),
    ("upscale", {"perceptual": "vgg19"}, r"model.upscale.vgg_weights: perceptual 'vgg19' needs a path"),
])  # fmt: skip
def test_bad_config_is_one_sentence_naming_the_key(section, value, message):
    raw: dict[str, Any] = {"prepare": {"source": "photos", "pairs": {}}, "model": {"task": "upscale"}}
    (raw["prepare"] if section == "pairs" else raw["model"])[section] = value
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_upscale_refuses_data_without_pairs(prepared_digits):
    from gan.data import read_manifest
    from gan.tasks import make_task

    with pytest.raises(ConfigError, match="needs super-resolution pairs; set prepare.pairs"):
        make_task(sr_params(), read_manifest(prepared_digits))


# ---------------------------------------------------------------- training and evaluation


def test_a_short_psnr_run_beats_bicubic_on_held_out_images(trained):
    m = trained["metrics"]
    assert m["psnr/psnr_model"] > m["psnr/bicubic"], m
    assert m["ssim/psnr_model"] > m["ssim/bicubic"], m
    assert all(np.isfinite(v) for v in m.values())


def test_the_schedule_switches_phase_halves_lrs_and_freezes_the_psnr_model():
    from gan.tasks.upscale import UpscaleTask

    params = parse_params({"prepare": {"source": "photos", "channels": 3, "pairs": {"scale": 4, "patch_size": 32}},
                           "model": {"task": "upscale", "upscale": {"pretrain_steps": 10, "lr_milestones": [4, 8], "perceptual": "none"}}})
    task = UpscaleTask(params, {"kind": "pairs", "scale": 4, "patch_size": 32, "channels": 3})
    assert [p.name for p in task.phases(9)] == ["Gpsnr"] and [p.name for p in task.phases(10)] == ["Dmain", "Gmain"]
    assert task.lr_scale(3) == {"G_psnr": 1.0} and task.lr_scale(4) == {"G_psnr": 0.5} and task.lr_scale(7) == {"G_psnr": 0.5} and task.lr_scale(9) == {"G_psnr": 0.25}
    assert task.lr_scale(10) == {"G": 1.0, "D": 1.0} and task.lr_scale(18) == {"G": 0.25, "D": 0.25}
    assert task.copies(10) == {"G_psnr": "G_ema"} and task.copies(11) == {}


def test_sample_grid_shows_five_columns(trained):
    images, nrow = trained["task"].grid(trained["nets"])
    assert nrow == 5 and images.shape[0] % 5 == 0 and images.shape[1] == 3 and images.min() >= -1 and images.max() <= 1


# ---------------------------------------------------------------- inference


def photo_crop(h: int, w: int, gray: bool = False) -> np.ndarray:
    from gan.data.photos import load_photo

    img = load_photo("astronaut")[100 : 100 + h, 150 : 150 + w]
    return np.asarray(Image.fromarray(img).convert("L")) if gray else img


def test_tiling_matches_whole_image_inference(trained):
    from gan.inference.upscale import UpscaleRunner

    runner = UpscaleRunner(str(trained["model"]))
    img = photo_crop(45, 70)
    whole = runner.upscale(img, tile=10_000).astype(int)
    assert whole.shape == (90, 140, 3)
    wide = runner.upscale(img, tile=16, overlap=32).astype(int)  # overlap beyond G's receptive field
    assert np.abs(wide - whole).max() <= 1  # only float rounding differs
    default = runner.upscale(img, tile=16, overlap=8).astype(int)
    assert np.abs(default - whole).mean() < 0.05 and np.abs(default - whole).max() <= 8
    # `gan upscale` pastes the same tiles straight into the image it encodes
    from gan.upscale import upscale_image

    assert np.array_equal(np.asarray(upscale_image(runner, img, 16, 8, "x")), default.astype(np.uint8))


def test_gan_upscale_keeps_names_formats_and_modes(trained, tmp_path):
    from gan.upscale import upscale

    (tmp_path / "in").mkdir()
    Image.fromarray(photo_crop(20, 30)).save(tmp_path / "in" / "a.png")
    Image.fromarray(photo_crop(24, 18, gray=True)).save(tmp_path / "in" / "b.jpg", quality=95)
    summary = upscale(str(trained["model"]), tmp_path / "in", tmp_path / "out", scale=2, tile=8)
    assert summary["images"] == 2 and summary["scale"] == 2
    with Image.open(tmp_path / "out" / "a.png") as a, Image.open(tmp_path / "out" / "b.jpg") as b:
        assert (a.format, a.mode, a.size) == ("PNG", "RGB", (60, 40))
        assert (b.format, b.mode, b.size) == ("JPEG", "L", (36, 48))


def _bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    paths = {}
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(p := folder / "tiny.png")
    paths["tiny"] = p
    (p := folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    paths["corrupt"] = p
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(p := folder / "deep.png")
    paths["deep"] = p
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), mode="RGBA").save(p := folder / "alpha.png")
    paths["alpha"] = p
    return paths


@pytest.mark.parametrize(("case", "message"), [
    ("tiny", r"tiny.png is 1x1 pixels; upscaling needs at least 4x4"),
    ("corrupt", r"corrupt.png cannot be read as an image"),
    ("deep", r"deep.png is a 16-bit or float image \(mode I;16\); convert it to 8-bit first"),
    ("alpha", r"alpha.png has an alpha channel; flatten it"),
    ("scale", r"scale = 4 is not what this model was trained for \(x2\)"),
])  # fmt: skip
def test_bad_inputs_are_one_sentence_and_write_nothing(trained, tmp_path, case, message):
    from gan.upscale import upscale

    paths = _bad_inputs(tmp_path / "all")
    folder = tmp_path / "in"
    folder.mkdir()
    source = paths["tiny" if case == "scale" else case]
    (folder / source.name).write_bytes(source.read_bytes())
    with pytest.raises(GanError, match=message):
        upscale(str(trained["model"]), folder, tmp_path / "out", scale=4 if case == "scale" else None)
    assert not (tmp_path / "out").exists()


def test_gan_upscale_cli_exits_non_zero_with_one_line(trained, tmp_path):
    _bad_inputs(tmp_path / "in")
    proc = subprocess.run([sys.executable, "-m", "gan.cli", "upscale", "--model", str(trained["model"]), "--in", str(tmp_path / "in"),
                           "--out", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_registered_model_round_trip_through_mlflow_and_http(trained, tmp_path):
    """log + register in a real SQLite registry, alias champion, then `gan upscale`, the pyfunc and `mlflow models serve` use it."""
    import mlflow
    from mlflow import MlflowClient

    from gan.inference.upscale import UpscaleRunner
    from gan.registry import log_generator
    from gan.upscale import upscale

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "in").mkdir()
    Image.fromarray(photo_crop(20, 28)).save(tmp_path / "in" / "x.png")
    with tracking(uri):
        version = log_generator(trained["model"], "sr-test", params={"p": 1}, metrics={"eval/psnr": trained["metrics"]["psnr"]},
                                tags={"git_commit": "test"})  # fmt: skip
        MlflowClient().set_registered_model_alias("sr-test", "champion", version.version)
        upscale("models:/sr-test@champion", tmp_path / "in", tmp_path / "out")
        model = mlflow.pyfunc.load_model("models:/sr-test@champion")
        batch = photo_crop(20, 28)[None]
        served = model.predict(batch)["images"]
    local = UpscaleRunner(str(trained["model"])).upscale(photo_crop(20, 28))
    assert served.dtype == np.uint8 and served.shape == (1, 40, 56, 3)
    assert np.array_equal(served[0], local)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "x.png")), local)

    # served over HTTP by `mlflow models serve`: image in, upscaled image out; a 1x1 image is a 400
    with model_server("models:/sr-test@champion", uri, tmp_path, timeout=240) as url:
        r = requests.post(url, json={"inputs": batch.tolist()}, timeout=120)
        assert r.status_code == 200, r.text
        assert np.array_equal(np.asarray(r.json()["predictions"]["images"], dtype=np.uint8), served)
        r = requests.post(url, json={"inputs": np.zeros((1, 1, 1, 3), np.uint8).tolist()}, timeout=60)
        assert r.status_code == 400 and "is 1x1 pixels; upscaling needs at least 4x4" in r.json()["message"]
    spec = json.loads((trained["model"] / "config.json").read_text())
    assert spec["task"] == "upscale" and spec["scale"] == 2 and set(spec["networks"]) == {"G", "G_psnr"}


def test_promotion_and_tuning_follow_the_metric_direction():
    """PSNR: higher is better, so a challenger must score above the champion (FID keeps lower-is-better)."""
    from gan.registry import decide
    from gan.tasks.upscale import UpscaleTask
    from gan.tuning import best_row

    spec = UpscaleTask.metric
    assert not spec.lower_is_better_for("psnr") and not spec.lower_is_better_for("ssim") and spec.lower_is_better_for("swd")
    assert decide("psnr", "2", 30.5, "1", 30.0, 0.0, lower_is_better=False).promoted
    assert not decide("psnr", "2", 30.2, "1", 30.0, 0.01, lower_is_better=False).promoted  # needs > 30.3
    assert decide("fid", "2", 29.0, "1", 30.0, 0.0).promoted
    rows = [{"status": "completed", "score": s} for s in (27.0, 31.0, 29.0)]
    assert best_row(rows, lower=False)["score"] == 31.0 and best_row(rows)["score"] == 27.0
    with pytest.raises(ValueError, match="register.metric = 'fid' is not a metric of the upscale task; use one of psnr"):
        spec.check("register.metric", "fid", "upscale")


def test_evaluate_stage_scores_both_models_beside_bicubic(trained, tmp_path, monkeypatch):
    """`gan evaluate` on an upscale model: PSNR/SSIM/SWD for G, G_psnr and bicubic, and the five-column samples.png."""
    import yaml

    from gan.config import FeaturizeConfig
    from gan.data import load_split
    from gan.features import save_feature_net, train_feature_net
    from gan.stages import evaluate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = trained["root"] / "prepared"
    x, _ = load_split(data, "train")
    net, _ = train_feature_net(x, None, x[:32], None, 0, FeaturizeConfig(epochs=1, batch_size=32, width=4, feature_dim=8))
    save_feature_net(net, tmp_path / "features", {"class_names": []})
    raw = trained["params"].model_dump(mode="json")
    raw["evaluate"]["num_samples"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    evaluate.main(["--params", str(tmp_path / "params.yaml"), "--data", str(data), "--model", str(trained["model"]),
                   "--features", str(tmp_path / "features"), "--out", str(tmp_path / "eval")])  # fmt: skip
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for name in ("psnr", "ssim", "swd"):
        assert {name, f"{name}/psnr_model", f"{name}/bicubic"} <= set(metrics)
    assert metrics["floor/ssim"] == 1.0 and metrics["psnr/psnr_model"] > metrics["psnr/bicubic"]
    with Image.open(tmp_path / "eval" / "samples.png") as grid:
        assert grid.width > grid.height  # five columns of crops


def test_photos_source_prepares_whole_images_for_other_tasks(tmp_path):
    """Without prepare.pairs the bundled photos are an ordinary unlabelled RGB source (resized and centre-cropped)."""
    from gan.config import PrepareConfig
    from gan.data import load_split, prepare_dataset
    from gan.data.photos import PHOTOS

    m = prepare_dataset(PrepareConfig(source="photos", channels=3, image_size=16), tmp_path / "p")
    assert m["counts"]["train"]["total"] + m["counts"]["val"]["total"] == len(PHOTOS) and not m["labelled"]
    x, y = load_split(tmp_path / "p", "train")
    assert x.shape[1:] == (3, 16, 16) and y is None
