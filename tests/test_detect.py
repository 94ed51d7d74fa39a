"""The detect task end to end: prepare's anomaly splits, short training runs, the threshold,
per-image scores, `gan score`, the registry and `mlflow models serve`, and bad inputs.

The contract test (build, every phase, bit-exact resume across f-AnoGAN's phase switch,
export -> pyfunc) lives in tests/test_tasks.py with the other tasks.

    .venv/bin/python -m pytest tests/test_detect.py -q
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from gan.config import PrepareConfig, parse_params
from gan.data import load_split, prepare_dataset, read_manifest
from gan.errors import ConfigError, DataError, GanError
from gan.tasks import make_task
from gan.tasks.base import EvalSettings
from gan.training import TrainCheckpoint, fit
from gan.training.outputs import export_generator, generator_spec

TARGET_FPR = 0.1


def detect_params(overrides: dict[str, Any] | None = None, **detect: Any) -> Any:
    raw: dict[str, Any] = {
        "prepare": {"image_size": 8, "anomaly_classes": ["0"]},
        "model": {"task": "detect", "z_dim": 16, "g_width": 16, "d_width": 16, "detect": {"target_fpr": TARGET_FPR, **detect}},
        "train": {"batch_size": 32, "steps": 30, "log_every": 10, "checkpoint_every": 10, "sample_every": 1000, "seed": 0},
    }
    for section, values in (overrides or {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_params(raw)


def train_and_export(params: Any, data: Path, out: Path) -> tuple[Any, Path]:
    """Train in-process (the trainer Ray Train runs) and export with the calibrated threshold."""
    torch.set_num_threads(1)
    task = make_task(params, read_manifest(data))
    saved: list[TrainCheckpoint] = []
    fit(params, data, task=task, log=None, report=lambda m, c: saved.append(c) if c else None)
    spec = generator_spec(task, saved[-1], {}, {})
    export_generator(task, saved[-1], spec, out, data)
    return task, out


@pytest.fixture(scope="module")
def ganomaly_export(prepared_anomaly_digits, tmp_path_factory) -> tuple[Any, Path, Path]:
    """A GANomaly trained 30 steps on digits (0 anomalous) and exported: (task, export dir, data)."""
    task, out = train_and_export(detect_params(method="ganomaly"), prepared_anomaly_digits, tmp_path_factory.mktemp("ganomaly") / "model")
    return task, out, prepared_anomaly_digits


# ---- prepare ----------------------------------------------------------------------------


def test_prepare_keeps_anomalies_out_of_train_and_val(prepared_anomaly_digits):
    m = read_manifest(prepared_anomaly_digits)
    a = m["anomaly"]
    assert a["anomaly_classes"] == ["0"] and a["normal_classes"] == [str(d) for d in range(1, 10)]
    for split in ("train", "val"):
        _, y = load_split(prepared_anomaly_digits, split)
        assert not np.isin(y, a["anomaly_labels"]).any(), split
    _, y = load_split(prepared_anomaly_digits, "test")
    assert int(np.isin(y, a["anomaly_labels"]).sum()) == a["test"]["anomalous"] == 178  # every 0 of the 1,797 digits
    assert a["test"]["normal"] == int((~np.isin(y, a["anomaly_labels"])).sum()) > 0
    # normal_classes is the same split said the other way round
    other = prepare_dataset(PrepareConfig(image_size=8, normal_classes=[str(d) for d in range(1, 10)]), prepared_anomaly_digits.parent / "same")
    assert other["hash"] == m["hash"] and other["anomaly"] == a


def test_prepare_without_anomaly_keys_is_unchanged(prepared_digits):
    m = read_manifest(prepared_digits)
    assert "anomaly" not in m and set(m["shards"]) == {"train", "val"}


# ---- training and evaluation ---------------------------------------------------------


def test_short_run_separates_an_obviously_different_class(tmp_path):
    """Trained on ones only, GANomaly ranks the other digits above held-out ones (AUROC well above 0.5)."""
    data = tmp_path / "ones"
    prepare_dataset(PrepareConfig(image_size=8, normal_classes=["1"]), data)
    params = detect_params({"prepare": {"normal_classes": ["1"], "anomaly_classes": None}, "train": {"steps": 60, "batch_size": 64},
                            "model": {"z_dim": 32, "g_width": 32, "d_width": 32}}, method="ganomaly")  # fmt: skip
    task, out = train_and_export(params, data, tmp_path / "model")
    from gan.export import load_networks

    nets, _ = load_networks(out)
    metrics = task.evaluate(nets, None, data, EvalSettings(num_samples=1))
    assert metrics["auroc"] > 0.75, metrics
    assert 0.0 <= metrics["fpr"] <= 1.0 and 0.0 <= metrics["tpr"] <= 1.0
    assert {f"auroc/{d}" for d in "023456789"} <= set(metrics) and 0.0 <= metrics["d_score/auroc"] <= 1.0
    images, nrow = task.grid(nets)  # after evaluate: the score histogram
    assert images.shape[:2] == (1, 3) and nrow == 1 and images.min() >= -1 and images.max() <= 1


def test_threshold_gives_the_requested_fpr_on_held_out_normal_data(ganomaly_export):
    """Chosen on normal validation images at model.detect.target_fpr; held-out normal test images agree within sampling error."""
    from gan.inference.detect import DetectRunner

    task, out, data = ganomaly_export
    runner = DetectRunner(str(out))
    spec = json.loads((out / "config.json").read_text())
    assert spec["target_fpr"] == TARGET_FPR and abs(spec["val_fpr"] - TARGET_FPR) <= 1 / spec["val_images"] + 1e-9
    x, y = load_split(data, "test")
    normal = ~np.isin(y, task.manifest["anomaly"]["anomaly_labels"])
    scores = runner.score_model_range(torch.from_numpy(np.array(x[normal])))
    fpr, n = float((scores > runner.threshold).mean()), int(normal.sum())
    # three binomial standard deviations of the test estimate plus the validation quantile's step
    assert abs(fpr - TARGET_FPR) <= 3 * np.sqrt(TARGET_FPR * (1 - TARGET_FPR) / n) + 1 / spec["val_images"], (fpr, n)


@pytest.mark.parametrize("method", ["ganomaly", "fanogan"])
def test_an_image_alone_scores_the_same_as_inside_a_batch(method, ganomaly_export, prepared_anomaly_digits, tmp_path):
    from gan.inference.detect import DetectRunner

    if method == "ganomaly":
        out = ganomaly_export[1]
    else:
        params = detect_params({"train": {"steps": 4, "n_critic": 2}}, method="fanogan", encoder_steps=2)
        out = train_and_export(params, prepared_anomaly_digits, tmp_path / "model")[1]
    runner = DetectRunner(str(out))
    x, _ = load_split(prepared_anomaly_digits, "test")
    images = np.rint((np.array(x[:40]) + 1.0) * 127.5).astype(np.uint8)  # [40, 1, 8, 8]
    together, flags = runner.score(images)
    alone = np.concatenate([runner.score(images[i : i + 1])[0] for i in range(len(images))])
    in_sevens = runner.score(images, batch_size=7)[0]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=0)
    np.testing.assert_allclose(in_sevens, together, rtol=1e-5, atol=0)
    assert np.array_equal(flags, together > runner.threshold) and np.ptp(together) > 0


def test_ganomaly_reinitialises_a_collapsed_d_and_says_so(prepared_anomaly_digits, caplog):
    from gan.models import build_network
    from gan.training import GANTrainer

    # a bar every loss is under: D is reset after every step, as the reference does below 1e-5
    params = detect_params({"train": {"steps": 4}}, method="ganomaly", d_reinit_below=100.0)
    task = make_task(params, read_manifest(prepared_anomaly_digits))
    trainer = GANTrainer(params, prepared_anomaly_digits, task=task)
    with caplog.at_level("WARNING", logger="gan.tasks.detect"):
        out = trainer.train_step()
    assert out["reinit/D"].item() == 1.0 and task.d_reinits == 1 and task.state_dict() == {"d_reinits": 1}
    assert "D re-initialised" in caplog.text and "step 1" in caplog.text
    torch.manual_seed(params.train.seed * 1_000_003 + 0)
    fresh = build_network("ganomaly.D", **task.network_specs()["D"]["kwargs"])
    for a, b in zip(trainer.network("D").state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the default bar (1e-5) leaves a healthy D alone
    calm = make_task(detect_params(method="ganomaly"), read_manifest(prepared_anomaly_digits))
    assert GANTrainer(calm.params, prepared_anomaly_digits, task=calm).train_step()["reinit/D"].item() == 0.0


def test_pca_baseline_and_metric_direction(ganomaly_export):
    task, _, data = ganomaly_export
    floor = task.real_floor(None, data, EvalSettings(num_samples=1))
    assert floor["auroc"] > 0.6 and set(floor) >= {"auroc", "average_precision", "fpr", "tpr"}
    assert task.metric.primary == "auroc" and not task.metric.lower_is_better


# ---- gan score, the registry, serving ----------------------------------------------------


def write_inputs(data: Path, folder: Path, n: int) -> tuple[np.ndarray, Path]:
    """The first ``n`` test images as PNG files and as an npz; returns (uint8 [n, 1, 8, 8], npz path)."""
    x, _ = load_split(data, "test")
    images = np.rint((np.array(x[:n]) + 1.0) * 127.5).astype(np.uint8)
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img[0]).save(folder / f"img{i:03d}.png")
    npz = folder.parent / "batch.npz"
    np.savez(npz, x=images[:, 0])
    return images, npz


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_gan_score_writes_one_row_per_image_from_a_folder_or_npz(ganomaly_export, tmp_path):
    from gan.detect import cli_main, load, score
    from gan.inference.detect import DetectRunner

    _, out, data = ganomaly_export
    images, npz = write_inputs(data, tmp_path / "imgs", 25)
    expected, flags = DetectRunner(str(out)).score(images)
    for source in (tmp_path / "imgs", npz):
        csv_path = tmp_path / f"{Path(source).stem}.csv"
        assert cli_main(["--model", str(out), "--in", str(source), "--out", str(csv_path), "--batch-size", "4"]) == 0
        rows = read_csv(csv_path)
        assert list(rows[0]) == ["file", "score", "is_anomaly"] and len(rows) == 25
        np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-6)
        assert [r["is_anomaly"] == "1" for r in rows] == flags.tolist()
    assert read_csv(tmp_path / "imgs.csv")[3]["file"] == "img003.png" and read_csv(tmp_path / "batch.csv")[3]["file"] == "batch.npz[3]"
    # the Python API streams the same rows
    assert [round(r.score, 6) for r in score(load(str(out)), npz)] == [round(float(s), 6) for s in expected]


def test_gan_score_leaves_nothing_behind_on_a_bad_file(ganomaly_export, tmp_path):
    from gan.detect import cli_main

    _, out, data = ganomaly_export
    write_inputs(data, tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "zz-broken.png").write_bytes(b"not an image")
    with pytest.raises(GanError, match=r"zz-broken.png cannot be read as an image"):
        cli_main(["--model", str(out), "--in", str(tmp_path / "imgs"), "--out", str(tmp_path / "scores.csv")])
    assert not (tmp_path / "scores.csv").exists() and not list(tmp_path.glob(".scores.csv*"))


def test_registry_round_trip_champion_scores_and_serves(ganomaly_export, mlflow_sqlite, tmp_path):
    """Registered twice in a real SQLite registry (AUROC, higher is better), scored through models:/NAME@champion and over HTTP."""
    from gan.detect import cli_main
    from gan.registry import register_generator

    task, out, data = ganomaly_export
    images, npz = write_inputs(data, tmp_path / "imgs", 6)

    def score(model: Any) -> float:
        return task.evaluate(model.nets, None, data, EvalSettings(num_samples=1))["auroc"]

    common = dict(metric="auroc", min_improvement=0.0, score=score, manifest=task.manifest, params={}, metrics={}, tags={},
                  lower_is_better=False)  # fmt: skip
    first, _ = register_generator(out, "digits-detect", **common)
    second, _ = register_generator(out, "digits-detect", **common)
    # the same weights again: no new version, the champion stays (its recorded AUROC is reported)
    assert first.promoted and not second.promoted and second.duplicate_of == first.challenger_version
    assert second.challenger_score == pytest.approx(first.challenger_score)
    csv_path = tmp_path / "scores.csv"
    assert cli_main(["--model", "models:/digits-detect@champion", "--in", str(npz), "--out", str(csv_path)]) == 0
    from gan.inference.detect import DetectRunner

    expected, _ = DetectRunner(str(out)).score(images)
    np.testing.assert_allclose([float(r["score"]) for r in read_csv(csv_path)], expected, rtol=1e-6)

    from tests.test_registry import model_server

    with model_server("models:/digits-detect@champion", mlflow_sqlite, tmp_path) as url:
        r = requests.post(url, json={"inputs": {"images": images.tolist()}}, timeout=60)
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"]
        np.testing.assert_allclose(pred["score"], expected, rtol=1e-6)
        assert pred["is_anomaly"] == (expected > DetectRunner(str(out)).threshold).tolist()
        r = requests.post(url, json={"inputs": {"images": images[:, :, :4].tolist()}}, timeout=60)
        assert r.status_code == 400


def test_decide_follows_the_metric_direction():
    from gan.registry import decide

    assert decide("auroc", "2", 0.91, "1", 0.90, 0.0, lower_is_better=False).promoted
    assert not decide("auroc", "2", 0.89, "1", 0.90, 0.0, lower_is_better=False).promoted
    assert not decide("auroc", "2", 0.91, "1", 0.90, 0.05, lower_is_better=False).promoted
    assert decide("fid", "2", 8.9, "1", 10.0, 0.1).promoted  # the generate task's rule is unchanged


# ---- bad inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"prepare": {"normal_classes": ["1"], "anomaly_classes": ["0"]}, "model": {"task": "detect"}},
         r"^params.yaml: prepare.anomaly_classes: give normal_classes or anomaly_classes, not both .*\.$"),
        ({"prepare": {"anomaly_classes": []}}, r"^params.yaml: prepare.anomaly_classes: an empty list names no class.*\.$"),
        ({"model": {"task": "detect"}}, r"^params.yaml: prepare.normal_classes: model.task 'detect' needs prepare.normal_classes .*\.$"),
        ({"prepare": {"anomaly_classes": ["0"]}, "model": {"task": "detect"}, "register": {"metric": "fid"}},
         r"^params.yaml: register.metric: 'fid' is not a metric of model.task 'detect'; allowed values are auroc, average_precision\.$"),
        ({"tune": {"metric": "auroc"}}, r"^params.yaml: tune.metric: 'auroc' is not a metric of model.task 'generate'; allowed values are fid, kid\.$"),
        ({"prepare": {"anomaly_classes": ["0"]}, "model": {"task": "detect", "detect": {"method": "anogan"}}},
         r"^params.yaml: model.detect.method = 'anogan' is invalid: allowed values are 'ganomaly' or 'fanogan'\.$"),
        ({"prepare": {"anomaly_classes": ["0"]}, "model": {"task": "detect", "detect": {"target_fpr": 1.5}}},
         r"^params.yaml: model.detect.target_fpr = 1.5 is invalid: must be less than 1\.$"),
    ],
)  # fmt: skip
def test_bad_params_fail_with_one_sentence_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_detect_defaults_its_metrics_to_auroc_and_generate_keeps_fid():
    assert parse_params({"prepare": {"anomaly_classes": ["0"]}, "model": {"task": "detect"}}).register.metric == "auroc"
    assert parse_params({}).tune.metric == "fid" and parse_params({}).register.metric == "fid"


def test_bad_data_and_model_inputs(prepared_digits, ganomaly_export, tmp_path):
    from gan.detect import cli_main
    from gan.inference.detect import DetectRunner

    with pytest.raises(DataError, match=r"^prepare.anomaly_classes names class '11', which the data does not have; its classes are 0, 1, .*\.$"):
        prepare_dataset(PrepareConfig(image_size=8, anomaly_classes=["11"]), tmp_path / "p")
    with pytest.raises(DataError, match=r"leaves no normal class"):
        prepare_dataset(PrepareConfig(image_size=8, anomaly_classes=[str(d) for d in range(10)]), tmp_path / "p")
    assert not (tmp_path / "p").exists()
    # a detect config on data prepared without the anomaly split
    with pytest.raises(ConfigError, match=r"has no normal/anomalous split; set prepare.normal_classes"):
        make_task(detect_params(), read_manifest(prepared_digits))
    with pytest.raises(ConfigError, match=r"model.detect.encoder_steps: 30 must be less than train.steps = 30"):
        detect_params(method="fanogan", encoder_steps=30)
    with pytest.raises(ConfigError, match=r"model.detect.encoder_steps: 20 must be less than tune.max_steps = 10, .* raise tune.max_steps\.$"):
        detect_params({"tune": {"max_steps": 10, "eval_every": 10}}, method="fanogan", encoder_steps=20)
    detect_params({"tune": {"enabled": False, "max_steps": 10, "eval_every": 10}}, method="fanogan", encoder_steps=20)  # no trials: no bound
    runner = DetectRunner(str(ganomaly_export[1]))
    with pytest.raises(GanError, match=r"^images have shape \[2, 1, 4, 4\]; send \[N, 1, 8, 8\]"):
        runner.score(np.zeros((2, 1, 4, 4), np.uint8))
    with pytest.raises(GanError, match=r"^images must hold pixel values from 0 to 255"):
        runner.score(np.full((1, 1, 8, 8), 300.0))
    with pytest.raises(GanError, match=r"^--in .*missing does not exist; give a folder of images or an .npz file with x\.$"):
        cli_main(["--model", str(ganomaly_export[1]), "--in", str(tmp_path / "missing"), "--out", str(tmp_path / "s.csv")])
