"""Feature network, evaluate_generator, the real floor and the featurize/evaluate stages end to end."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from gan.config import ModelConfig
from gan.data import load_split
from gan.errors import GanError, run_main
from gan.evaluation import evaluate_generator, real_floor
from gan.export import save_generator
from gan.features import load_feature_net
from gan.models import build_G, model_kwargs
from gan.stages import evaluate as evaluate_stage
from gan.stages import featurize as featurize_stage

torch.set_num_threads(1)

PARAMS = {
    "prepare": {"image_size": 8},
    "model": {"arch": "dcgan", "g_width": 8, "d_width": 8, "z_dim": 8},
    "featurize": {"epochs": 3, "batch_size": 64, "width": 16, "feature_dim": 32},
    "evaluate": {"num_samples": 200, "batch_size": 100, "nearest_k": 5, "kid_subset_size": 100},
}


def _params(tmp: Path, **sections) -> Path:
    raw = {k: dict(v) for k, v in PARAMS.items()}
    for name, values in sections.items():
        raw[name].update(values)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def featurized(prepared_digits, tmp_path_factory) -> Path:
    """models/features trained once by the featurize stage on the 8x8 digits."""
    tmp = tmp_path_factory.mktemp("featurize")
    code = featurize_stage.main(["--params", str(_params(tmp)), "--data", str(prepared_digits),
                                 "--out", str(tmp / "features"), "--metrics", str(tmp / "featurize" / "metrics.json")])
    assert code == 0
    return tmp


def _tiny_generator(out_dir: Path, conditional: bool = True) -> Path:
    cfg = ModelConfig(arch="dcgan", conditional=conditional, z_dim=8, g_width=8)
    G_kwargs, _ = model_kwargs(cfg, channels=1, image_size=8, num_classes=10)
    torch.manual_seed(0)
    G = build_G("dcgan", **G_kwargs)
    spec = {"arch": "dcgan", "G_kwargs": G_kwargs, "z_dim": G.z_dim, "num_classes": G.num_classes,
            "class_names": [str(i) for i in range(10)], "channels": 1, "image_size": 8}
    return save_generator(G, spec, out_dir)


class ReplayGenerator(nn.Module):
    """A generator with known output: real images of ``classes`` only.

    Unconditional: the image is picked from those classes by z. Conditional: an image
    of the requested class (or, with ``wrong_class``, of the next class).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: list[int], conditional: bool = False, wrong_class: bool = False):
        super().__init__()
        self.z_dim, self.num_classes, self.c_dim = 4, (10 if conditional else 0), 0
        self.wrong_class = wrong_class
        keep = np.isin(y, classes)
        self.register_buffer("bank", torch.from_numpy(np.array(x[keep])))  # [M, C, H, W]
        self.register_buffer("bank_y", torch.from_numpy(np.array(y[keep])))
        self.anchor = nn.Parameter(torch.zeros(()))  # evaluate_generator finds G's device from its parameters

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        pick = (z.abs().sum(1) * 1e4).long()  # [N] a deterministic index per latent
        if y is None:
            return self.bank[pick % len(self.bank)]
        target = (y + 1) % 10 if self.wrong_class else y
        out = []
        for p, c in zip(pick.tolist(), target.tolist(), strict=True):
            rows = (self.bank_y == c).nonzero().ravel()
            out.append(self.bank[rows[p % len(rows)]])
        return torch.stack(out) + 0 * self.anchor


@pytest.fixture(scope="module")
def feature_net(featurized):
    return load_feature_net(featurized / "features")


@pytest.fixture(scope="module")
def splits(prepared_digits):
    return load_split(prepared_digits, "train"), load_split(prepared_digits, "val")


def test_featurize_writes_a_classifier_and_its_validation_metrics(featurized, feature_net, splits):
    metrics = json.loads((featurized / "featurize" / "metrics.json").read_text())
    assert metrics["val_accuracy"] > 0.85 and metrics["val_loss"] < 0.6
    config = json.loads((featurized / "features" / "config.json").read_text())
    assert config["kind"] == "classifier" and config["inception"] is None
    assert sorted(p.name for p in (featurized / "features").iterdir()) == ["config.json", "model.safetensors"]
    (train_x, _), (val_x, val_y) = splits
    assert feature_net.features(val_x).shape == (len(val_x), 32)
    # metric features are standardised on the training split (KID's kernel expects order-one values)
    train_features = feature_net.features(train_x).double()
    assert train_features.mean(0).abs().max() < 1e-4 and (train_features.std(0) - 1).abs().max() < 1e-4
    logits = feature_net.logits(val_x)
    assert logits.shape == (len(val_x), 10)
    assert (logits.argmax(1).numpy() == val_y).mean() == pytest.approx(metrics["val_accuracy"])
    # features in one batch or many are the same (eval mode, no batch statistics), even after .train()
    feature_net.train()
    assert not feature_net.domain.training
    assert torch.allclose(feature_net.features(val_x[:50], batch_size=7), feature_net.features(val_x[:50]), atol=1e-5)


def test_mode_coverage_of_a_generator_that_emits_three_classes(feature_net, splits):
    (train_x, train_y), (val_x, val_y) = splits
    G = ReplayGenerator(train_x, train_y, classes=[0, 1, 2])
    m = evaluate_generator(G, feature_net, val_x, val_y, num_samples=300, seed=0, batch_size=100)
    assert m["mode_coverage"] == pytest.approx(0.3)
    assert m["class_kl"] == pytest.approx(math.log(10 / 3), abs=0.15)
    assert "conditional_accuracy" not in m
    assert m["inception_score"] < 3.5  # at most about 3 confident classes
    full = evaluate_generator(ReplayGenerator(train_x, train_y, list(range(10))), feature_net, val_x, val_y, 300, 0, 100)
    assert full["mode_coverage"] == 1.0 and full["class_kl"] < 0.05
    assert full["fid"] < m["fid"] and full["recall"] > m["recall"] and full["coverage"] > m["coverage"]


def test_conditional_accuracy_tells_right_from_wrong_classes(feature_net, splits):
    (train_x, train_y), (val_x, val_y) = splits
    right = ReplayGenerator(train_x, train_y, list(range(10)), conditional=True)
    wrong = ReplayGenerator(train_x, train_y, list(range(10)), conditional=True, wrong_class=True)
    m_right = evaluate_generator(right, feature_net, val_x, val_y, 300, 0, 100)
    m_wrong = evaluate_generator(wrong, feature_net, val_x, val_y, 300, 0, 100)
    assert m_right["conditional_accuracy"] > 0.85 and m_wrong["conditional_accuracy"] < 0.15
    assert {f"conditional_accuracy/{k}" for k in range(10)} <= set(m_right)
    # both emit the same images overall, so the unconditional metrics barely differ
    assert abs(m_right["fid"] - m_wrong["fid"]) < 0.5 * m_right["fid"] + 0.5


def test_evaluate_generator_is_fast_deterministic_and_restores_train_mode(feature_net, splits):
    _, (val_x, val_y) = splits
    cfg = ModelConfig(arch="dcgan", conditional=True, z_dim=8, g_width=8)
    G = build_G("dcgan", **model_kwargs(cfg, 1, 8, 10)[0]).train()
    start = time.perf_counter()
    a = evaluate_generator(G, feature_net, val_x, val_y, num_samples=500, seed=3, batch_size=500)
    elapsed = time.perf_counter() - start
    assert G.training
    b = evaluate_generator(G, feature_net, val_x, val_y, num_samples=500, seed=3, batch_size=128)
    assert a == b  # the batch size changes nothing
    assert elapsed < 15  # about a second on an idle 2-core CPU; generous for a loaded machine
    assert set(a) >= {"fid", "kid", "precision", "recall", "density", "coverage", "inception_score",
                      "mode_coverage", "class_kl", "conditional_accuracy"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in a.values())


def test_real_floor_is_below_an_untrained_generator(feature_net, splits):
    (train_x, train_y), (val_x, val_y) = splits
    floor = real_floor(feature_net, train_x, train_y, val_x, val_y, num_samples=300, batch_size=200)
    cfg = ModelConfig(arch="dcgan", conditional=False, z_dim=8, g_width=8)
    G = build_G("dcgan", **model_kwargs(cfg, 1, 8, 10)[0])
    bad = evaluate_generator(G, feature_net, val_x, val_y, 300, 0, 200)
    assert floor["fid"] < 0.2 * bad["fid"]
    assert floor["precision"] > 0.6 and floor["recall"] > 0.6 and floor["coverage"] > 0.8
    assert floor["mode_coverage"] == 1.0 and floor["class_kl"] < 0.05 and floor["conditional_accuracy"] > 0.9
    assert abs(floor["kid"]) < 0.1 * bad["kid"]


def test_evaluate_stage_end_to_end(featurized, prepared_digits, tmp_path, mlflow_sqlite):
    import mlflow

    model = _tiny_generator(tmp_path / "generator")
    out = tmp_path / "eval"
    code = evaluate_stage.main(["--params", str(_params(tmp_path)), "--data", str(prepared_digits), "--model", str(model),
                                "--features", str(featurized / "features"), "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("fid", "kid", "precision", "recall", "density", "coverage", "inception_score",
                 "mode_coverage", "class_kl", "conditional_accuracy"):
        assert name in metrics and f"floor/{name}" in metrics
    assert metrics["floor/fid"] < metrics["fid"] and metrics["num_samples"] == 200
    with Image.open(out / "samples.png") as png:
        # 10 rows (one per class) x 10 columns of 8x8 samples enlarged to 32x32, 2-pixel padding
        assert png.size == (10 * 34 + 2, 10 * 34 + 2)
    mlflow.set_tracking_uri(mlflow_sqlite)
    runs = mlflow.search_runs(experiment_names=["gan-evaluate"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.metrics["fid"] == pytest.approx(metrics["fid"]) and "floor/fid" in run.data.metrics
    assert run.data.tags["git_commit"] and run.data.params["evaluate.num_samples"] == "200"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert artifacts == {"metrics.json", "per_class.json", "per_class.png", "samples.png", "closest.png"}
    # headline figures only in metrics.json; per-class values, named, in per_class.json
    assert not [k for k in metrics if k.rpartition("/")[2].isdigit()]
    classes = json.loads((out / "per_class.json").read_text())["classes"]
    assert [c["class"] for c in classes] == list(range(10)) and all("conditional_accuracy" in c for c in classes)
    assert all({"recall", "coverage", "floor/recall", "floor/coverage"} <= set(c) for c in classes)
    assert metrics["classes_below_floor"] == len(json.loads((out / "per_class.json").read_text())["alerts"])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.source.name"] == "pipelines/evaluate.py"
    # the privacy audit runs on every generate model; without models/discriminator/ it leaves out D's attack
    assert {"dcr_share/pixel", "dcr_share/feature", "mia_auroc/distance", "memorisation"} <= set(metrics["privacy"])
    assert "mia_auroc/discriminator" not in metrics["privacy"]
    assert run.data.metrics["privacy/dcr_share/pixel"] == pytest.approx(metrics["privacy"]["dcr_share/pixel"])


def _stage_error(capsys, main, argv: list[str]) -> str:
    """Run a stage through run_main and return its one-line error (asserting exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as exc:
        run_main(lambda: main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_evaluate_bad_inputs_give_one_sentence(featurized, prepared_digits, tmp_path, capsys):
    params = str(_params(tmp_path))
    base = ["--params", params, "--data", str(prepared_digits), "--out", str(tmp_path / "eval")]
    err = _stage_error(capsys, evaluate_stage.main, [*base, "--model", str(tmp_path / "nope"), "--features", str(featurized / "features")])
    assert str(tmp_path / "nope" / "config.json") in err and "train" in err
    model = _tiny_generator(tmp_path / "generator")
    err = _stage_error(capsys, evaluate_stage.main, [*base, "--model", str(model), "--features", str(tmp_path / "missing")])
    assert str(tmp_path / "missing" / "config.json") in err and "featurize" in err
    # a feature network whose weights file is damaged
    broken = tmp_path / "broken"
    shutil.copytree(featurized / "features", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    err = _stage_error(capsys, evaluate_stage.main, [*base, "--model", str(model), "--features", str(broken)])
    assert "model.safetensors" in err and "featurize" in err
    # a generator of another resolution than the data and the features
    G_kwargs, _ = model_kwargs(ModelConfig(arch="dcgan", z_dim=8, g_width=8), 1, 16, 10)
    G16 = build_G("dcgan", **G_kwargs)
    spec16 = {"arch": "dcgan", "G_kwargs": G_kwargs, "z_dim": 8, "num_classes": 10, "channels": 1, "image_size": 16}
    save_generator(G16, spec16, tmp_path / "g16")
    err = _stage_error(capsys, evaluate_stage.main, [*base, "--model", str(tmp_path / "g16"), "--features", str(featurized / "features")])
    assert "(1, 16, 16)" in err and "train" in err
    assert not (tmp_path / "eval").exists()  # nothing half-written


def test_featurize_bad_inputs_give_one_sentence(prepared_digits, tmp_path, capsys):
    err = _stage_error(capsys, featurize_stage.main, ["--params", str(_params(tmp_path)), "--data", str(tmp_path / "none")])
    assert "manifest.json" in err and "prepare" in err
    params = _params(tmp_path, featurize={"inception_weights": str(tmp_path / "inception.pth")})
    err = _stage_error(capsys, featurize_stage.main, ["--params", str(params), "--data", str(prepared_digits),
                                                      "--out", str(tmp_path / "features")])
    assert "featurize.inception_weights" in err and str(tmp_path / "inception.pth") in err and "never downloaded" in err
    assert not (tmp_path / "features").exists()


def test_unlabelled_data_trains_an_autoencoder(prepared_digits, tmp_path):
    data = tmp_path / "unlabelled"
    shutil.copytree(prepared_digits, data)
    for y in data.glob("*/y-*.npy"):
        y.unlink()
    out = tmp_path / "features"
    assert featurize_stage.main(["--params", str(_params(tmp_path, featurize={"epochs": 1})), "--data", str(data),
                                 "--out", str(out), "--metrics", str(tmp_path / "m.json")]) == 0
    assert "val_accuracy" not in json.loads((tmp_path / "m.json").read_text())
    net = load_feature_net(out)
    assert net.kind == "autoencoder" and net.num_classes == 0
    x, _ = load_split(data, "val")
    assert net.logits(x) is None
    G = _tiny_generator(tmp_path / "g", conditional=False)
    from gan.export import load_generator

    m = evaluate_generator(load_generator(G)[0], net, x, None, num_samples=100, seed=0, batch_size=100)
    assert set(m) == {"fid", "kid", "precision", "recall", "density", "coverage"}


def test_inception_features_from_weights_on_disk(tmp_path):
    from sklearn.datasets import load_digits
    from torchvision.models import inception_v3

    from gan.config import PrepareConfig
    from gan.data import prepare_dataset

    # 60 digits: the stage's sensitivity report runs Inception-v3 at 299x299 over the
    # validation split four times, 0.4 s an image on one CPU thread
    digits = load_digits()
    rows = np.concatenate([np.flatnonzero(digits.target == k)[:6] for k in range(10)])
    np.savez(tmp_path / "digits.npz", x=(digits.images[rows] / 16.0).astype(np.float32), y=digits.target[rows])
    data = tmp_path / "prepared"
    prepare_dataset(PrepareConfig(source="npz", path=str(tmp_path / "digits.npz"), image_size=8), data)
    # torchvision's architecture with random weights stands in for the real file (nothing downloads)
    weights = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    params = _params(tmp_path, featurize={"epochs": 1, "inception_weights": str(weights)})
    out = tmp_path / "features"
    assert featurize_stage.main(["--params", str(params), "--data", str(data), "--out", str(out),
                                 "--metrics", str(tmp_path / "m.json")]) == 0
    net = load_feature_net(out)
    x, _ = load_split(data, "val")
    feats, logits = net.embed(x[:2])
    assert net.kind == "inception" and feats.shape == (2, 2048) and logits.shape == (2, 10)
    weights.write_bytes(weights.read_bytes()[:1000] + b"changed")
    with pytest.raises(GanError, match="changed since featurize"):
        load_feature_net(out)


def test_a_class_collapsed_onto_one_point_raises_a_coverage_alert_only_for_that_class():
    """Global metrics can miss it; within the class, coverage falls far below its real-vs-real floor."""
    from gan.evaluation import Embedding
    from gan.per_class import coverage_alerts, per_class_chart, per_class_quality

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(200)  # [400] classes 0, 1

    def embedding(collapse: bool) -> Embedding:
        x = torch.randn(400, 8, generator=gen) + 4 * labels[:, None].float()
        if collapse:
            x[labels == 1] = x[labels == 1].mean(0) + 0.01 * torch.randn(200, 8, generator=gen)  # one blob: the "background"
        return Embedding(x, None, labels)

    real, other_real, fake = embedding(False), embedding(False), embedding(True)
    rows, floor = per_class_quality(real, fake, 2, nearest_k=5), per_class_quality(real, other_real, 2, nearest_k=5)
    assert floor[1]["coverage"] > 0.8 and rows[0]["coverage"] > 0.8 and rows[1]["coverage"] < 0.2
    (alert,) = coverage_alerts(rows, floor, ["face", "background"])
    assert alert.startswith("class 'background': coverage") and "floor" in alert
    assert per_class_chart(rows, floor, ["face", "background"])[:4] == b"\x89PNG"


def test_featurize_reports_whether_its_feature_space_sees_blur_and_noise(featurized_digits):
    """featurize/metrics.json: FID of blurred and of noised real images against the floor; not in config.json."""
    from gan.sensitivity import blind_spot_warning, gaussian_blur

    metrics = json.loads((featurized_digits.parent / "metrics.json").read_text())
    floor = metrics["sensitivity/fid_floor"]
    assert metrics["sensitivity/fid_blur"] > floor and metrics["sensitivity/fid_noise"] > floor
    assert metrics["sensitivity/blur_ratio"] == pytest.approx(metrics["sensitivity/fid_blur"] / floor)
    assert not [k for k in json.loads((featurized_digits / "config.json").read_text())["metrics"] if k.startswith("sensitivity")]
    # the blur keeps a flat image flat and softens an edge; a blind space gets a warning naming the knobs
    flat, edge = torch.full((1, 1, 8, 8), 0.3), torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0
    assert torch.allclose(gaussian_blur(flat, 0.7), flat) and 0 < gaussian_blur(edge, 0.7)[0, 0, 0, 3] < 0.5
    warning = blind_spot_warning({"sensitivity/fid_blur": 1.6, "sensitivity/fid_floor": 1.69, "sensitivity/blur_ratio": 0.95})
    assert warning and "featurize.feature_dim" in warning and blind_spot_warning({**metrics, "sensitivity/blur_ratio": 3.0}) is None


def test_the_quality_head_tells_sharp_blurred_and_noisy_apart(featurized_digits, prepared_digits, tmp_path):
    """featurize.quality_weight > 0 (the default) trains a sharp / blurred / noisy head beside the
    classifier; 0 leaves it out, and a config.json from before the key loads without one."""
    from gan.features import DEGRADATIONS, degrade

    x = torch.as_tensor(np.array(load_split(prepared_digits, "val")[0], dtype=np.float32))  # [N, 1, 8, 8]
    degraded, kinds = degrade(x, torch.Generator().manual_seed(0))
    again, kinds_again = degrade(x, torch.Generator().manual_seed(0))
    assert torch.equal(degraded, again) and torch.equal(kinds, kinds_again)  # a seeded generator repeats
    assert torch.equal(degraded[kinds == 0], x[kinds == 0]) and set(kinds.tolist()) == {0, 1, 2}
    assert (degraded[kinds > 0] - x[kinds > 0]).abs().flatten(1).amax(1).min() > 0.01

    config = json.loads((featurized_digits / "config.json").read_text())
    assert config["net_kwargs"]["quality_head"] is True and config["settings"]["quality_weight"] == 0.1
    domain = load_feature_net(featurized_digits).domain
    with torch.no_grad():
        accuracy = (domain.degradation_logits(degraded).argmax(1) == kinds).float().mean().item()
    assert accuracy > 1.5 / len(DEGRADATIONS), accuracy  # chance is 1/3

    out = tmp_path / "features"
    params = _params(tmp_path, featurize={"epochs": 1, "quality_weight": 0.0})
    assert featurize_stage.main(["--params", str(params), "--data", str(prepared_digits), "--out", str(out),
                                 "--metrics", str(tmp_path / "m.json")]) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["net_kwargs"]["quality_head"] is False
    del config["net_kwargs"]["quality_head"]  # as featurize wrote it before the head existed
    (out / "config.json").write_text(json.dumps(config))
    assert load_feature_net(out).domain.quality is None


@pytest.mark.parametrize(("accuracy", "floor", "alerted"), [(0.48, 0.825, True), (0.80, 0.825, False), (0.0, 0.0, False)])
def test_a_class_whose_samples_are_often_of_another_class_raises_an_alert(accuracy, floor, alerted):
    """Coverage and recall may look fair while half of a class's samples are not of the class (a probe's case: 0.48 against 0.825)."""
    from gan.per_class import coverage_alerts

    rows = [{"recall": 0.9, "coverage": 0.9}, {"recall": 0.65, "coverage": 0.7}]
    floor_rows = [{"recall": 0.9, "coverage": 0.9}, {"recall": 0.8, "coverage": 0.8}]
    classes = [{"class": 0, "conditional_accuracy": 0.95, "floor/conditional_accuracy": 0.95},
               {"class": 1, "conditional_accuracy": accuracy, "floor/conditional_accuracy": floor}]
    alerts = coverage_alerts(rows, floor_rows, ["0", "1"], accuracy=classes)
    assert len(alerts) == int(alerted)
    if alerted:
        assert alerts[0].startswith("class '1': conditional accuracy 0.48 is below 75% of its real-vs-real floor 0.82")
    # recall far below its floor is flagged too, without any accuracy
    (low_recall,) = coverage_alerts([{"recall": 0.3, "coverage": 0.9}], [{"recall": 0.8, "coverage": 0.9}], ["a"])
    assert "recall 0.30 is below 50% of its real-vs-real floor 0.80" in low_recall
