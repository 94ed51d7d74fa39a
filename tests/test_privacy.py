"""The memorisation audit (gan.privacy): calibration on the digits, positive controls, the evaluate stage's section.

    pytest -q tests/test_privacy.py

A "generator" that returns perturbed training images must fail the audit and fresh real
images must pass; the share closer to training than to held-out data is calibrated on
scikit-learn's digits (600 train / 600 held-out): 0.504 for fresh real images, ~0.63
when a quarter are copies, 1.00 for a copier.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from gan.metrics import dcr_share, membership_auroc, nearest_distances
from gan.privacy import AuditSets, audit_generator, audit_images, audit_sets, memorisation_excess

from .conftest import write_params


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits in [-1, 1], ``[N, 1, 8, 8]``, with labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 8.0 - 1.0).astype(np.float32)[:, None], d.target


def split(digits, seed: int = 0) -> tuple[AuditSets, np.ndarray, np.ndarray]:
    """600 train / 600 held-out reference images and the 597 left as fresh real images."""
    x, y = digits
    rows = np.random.default_rng(seed).permutation(len(x))
    tr, he, fr = rows[:600], rows[600:1200], rows[1200:]
    return AuditSets(x[tr], y[tr], x[he], y[he]), x[fr], y[fr]


class Copier(nn.Module):
    """A "generator" that returns training images (picked by z) plus a little noise: the positive control."""

    def __init__(self, images: np.ndarray, noise: float = 0.05) -> None:
        super().__init__()
        self.register_buffer("images", torch.as_tensor(images))
        self.noise = noise
        self.num_classes = 0
        self.z_dim = 1 + int(np.prod(images.shape[1:]))
        self.gain = nn.Parameter(torch.ones(()))  # sampling reads the device off a parameter

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        idx = (z[:, 0].abs() * 1e4).long() % len(self.images)  # [B] which training image
        return self.images[idx] + self.noise * z[:, 1:].view(-1, *self.images.shape[1:])


class MemorisingD(nn.Module):
    """A discriminator that scores an image by its closeness to the training set: LOGAN's ideal target."""

    def __init__(self, images: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("images", torch.as_tensor(images).flatten(1))
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return -self.gain * torch.cdist(x.flatten(1), self.images).min(dim=1).values  # [B]


def test_dcr_share_calibration_on_the_digits(digits):
    sets, fresh, _ = split(digits)
    real = audit_images(fresh, sets, None)[0]["dcr_share/pixel"]
    quarter = fresh.copy()
    quarter[: len(fresh) // 4] = sets.train_x[: len(fresh) // 4]
    copies = audit_images(quarter, sets, None)[0]["dcr_share/pixel"]
    noisy = sets.train_x + np.random.default_rng(0).normal(0, 0.05, sets.train_x.shape).astype(np.float32)
    copier = audit_images(noisy, sets, None)[0]["dcr_share/pixel"]
    assert real == pytest.approx(0.504, abs=0.01)
    assert copies == pytest.approx(0.63, abs=0.015)
    assert copier == 1.0


def test_metrics_by_hand():
    d_train, d_held = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 2.0, 1.0, 5.0])
    assert dcr_share(d_train, d_held) == pytest.approx((2 + 0.5) / 4)  # one tie counts half
    assert membership_auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert membership_auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])) == 0.5
    dist, idx = nearest_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
    assert dist.tolist() == [1.0, 0.0] and idx.tolist() == [1, 0]


def test_copier_fails_and_fresh_real_images_pass(digits):
    from gan.models import build_network

    sets, fresh, fresh_y = split(digits)
    D = build_network("dcgan.D", width=8, num_classes=0, channels=1, image_size=8).eval()  # untrained: knows nothing
    real, _ = audit_images(fresh, sets, None, D=D)
    assert memorisation_excess(real, 0.55) is None, real
    assert 0.4 < real["mia_auroc/discriminator"] < 0.6 and 0.4 < real["mia_auroc/distance"] < 0.6
    assert real["dcr_ratio_p5/pixel"] > 0.5

    copied, pairs, samples, _ = audit_generator(Copier(sets.train_x), MemorisingD(sets.train_x), None, sets.train_x, sets.train_y,
                                                sets.held_x, sets.held_y, num_samples=600, seed=0)  # fmt: skip
    assert copied["dcr_share/pixel"] == 1.0 and copied["mia_auroc/discriminator"] == 1.0
    assert copied["mia_auroc/distance"] > 0.8 and copied["dcr_ratio_p5/pixel"] < 0.3
    sentence = memorisation_excess(copied, 0.55)
    assert sentence is not None and "exceeds register.max_memorisation = 0.55 by 0.450" in sentence
    # the picture's pairs: each sample beside the training image it copies
    s, t = pairs[0]
    assert np.abs(samples[s] - sets.train_x[t]).max() < 0.3


def test_audit_sets_have_equal_counts_and_keep_labels(digits):
    x, y = digits
    sets = audit_sets(x[:1000], y[:1000], x[1000:1300], y[1000:1300], seed=1)
    assert len(sets.train_x) == len(sets.held_x) == 300 == len(sets.train_y)
    # rows of the training split, with their own labels
    first = np.flatnonzero((x[:1000] == sets.train_x[0]).all(axis=(1, 2, 3)))
    assert y[first[0]] == sets.train_y[0]


def copying_generator(images: np.ndarray, noise: float = 0.05, z_dim: int = 8) -> tuple[nn.Module, dict]:
    """A real conditional ``mlp.G`` whose weights return ``images[y]`` (one per class) plus a little noise from z.

    Hidden unit k fires for class k (its one-hot input), and the output layer's column k
    holds atanh of image k, so ``tanh`` gives the image back; z reaches the output
    through small weights: the positive control, exported and loaded like any generator.
    """
    from gan.models import build_network

    K, shape = len(images), list(images.shape[1:])
    kwargs = {"z_dim": z_dim, "width": K + z_dim, "depth": 1, "num_classes": K, "out_shape": shape}
    G = build_network("mlp.G", **kwargs)
    first, last = G.net[0], G.net[2]
    with torch.no_grad():
        first.weight.zero_(), first.bias.zero_(), last.bias.zero_()
        first.weight[:K, z_dim:] = torch.eye(K)  # unit k <- one_hot(y)_k
        first.weight[K:, :z_dim] = torch.eye(z_dim)  # relu(z)
        last.weight.zero_()
        last.weight[:, :K] = torch.atanh(torch.as_tensor(images).flatten(1).clamp(-0.999, 0.999)).T
        last.weight[:, K:] = noise * torch.randn(last.weight.shape[0], z_dim, generator=torch.Generator().manual_seed(0))
    return G.eval(), kwargs


def export(root, G, G_kwargs, D, manifest, name: str) -> tuple:
    """models/<name>/ (G) and models/<name>-D/ (D) as the train stage writes them: one run, one step."""
    from gan.export import save_networks

    spec = {"task": "generate", "inference": "generate", "z_dim": G_kwargs["z_dim"], "num_classes": G_kwargs["num_classes"],
            "class_names": list(manifest["class_names"]), "channels": 1, "image_size": 8, "data_hash": manifest["hash"],
            "ray_run": name, "step": 1, "arch": "mlp", "G_kwargs": G_kwargs, "train": {}, "model": {}, "tuned": {}}  # fmt: skip
    D_kwargs = {"width": 8, "num_classes": G_kwargs["num_classes"], "channels": 1, "image_size": 8}
    gen = save_networks({"G": G}, {**spec, "networks": {"G": {"network": "mlp.G", "kwargs": G_kwargs}}}, root / "models" / name)
    disc = save_networks({"D": D}, {**spec, "networks": {"D": {"network": "dcgan.D", "kwargs": D_kwargs}}}, root / "models" / f"{name}-D")
    return gen, disc


def evaluate_model(root, params, prepared, features, gen, disc, name: str):
    from gan.stages import evaluate

    argv = ["--params", str(params), "--data", str(prepared), "--model", str(gen), "--features", str(features),
            "--discriminator", str(disc), "--out", str(root / "eval" / name)]  # fmt: skip
    assert evaluate.main(argv) == 0
    return root / "eval" / name


@pytest.fixture(scope="module")
def copier_images(prepared_digits):
    """One image per class from the audit's own training subsample (the images the copier returns)."""
    from gan.data import load_split

    sets = audit_sets(*load_split(prepared_digits, "train"), *load_split(prepared_digits, "val"), seed=0)
    return np.stack([sets.train_x[np.flatnonzero(sets.train_y == k)[0]] for k in range(10)])


def test_evaluate_writes_the_privacy_section_and_the_closest_pairs(prepared_digits, featurized_digits, copier_images, tmp_path, mlflow_sqlite):
    """The real evaluate stage on an exported copier with D beside it: every figure, the picture, MLflow's names."""
    import mlflow

    from gan.data import read_manifest
    from gan.models import build_network

    G, G_kwargs = copying_generator(copier_images)
    D = build_network("dcgan.D", width=8, num_classes=10, channels=1, image_size=8)
    gen, disc = export(tmp_path, G, G_kwargs, D, read_manifest(prepared_digits), "copier")
    params = write_params(tmp_path / "params.yaml", evaluate={"num_samples": 200, "kid_subset_size": 100})
    out = evaluate_model(tmp_path, params, prepared_digits, featurized_digits, gen, disc, "copier")
    privacy = json.loads((out / "metrics.json").read_text())["privacy"]
    want = {"dcr_share/pixel", "dcr_share/feature", "dcr_ratio_p5/pixel", "dcr_ratio_p5/feature", "mia_auroc/distance", "mia_auroc/discriminator", "memorisation"}
    assert set(privacy) == want
    assert privacy["dcr_share/pixel"] == 1.0 and privacy["dcr_share/feature"] > 0.9 and privacy["memorisation"] == 1.0
    assert privacy["dcr_ratio_p5/pixel"] < 0.3
    assert (out / "closest.png").read_bytes()[:4] == b"\x89PNG"
    run = mlflow.search_runs(experiment_names=["gan-evaluate"]).iloc[0]
    assert run["metrics.privacy/dcr_share/pixel"] == 1.0
    assert run["metrics.privacy/mia_auroc/discriminator"] == pytest.approx(privacy["mia_auroc/discriminator"])


def test_register_refuses_to_promote_a_memorising_generator(prepared_digits, featurized_digits, copier_images, tmp_path, mlflow_sqlite):
    """A real SQLite MLflow store: the copier (v1) stays challenger with the reason; a fitted G (v2) becomes champion."""
    from mlflow import MlflowClient

    from gan.data import read_manifest
    from gan.models import build_network

    from .test_registry import make_generator, register

    manifest = read_manifest(prepared_digits)
    # 0.7, not the shipped 0.6: the stand-in "fitted" G regresses onto the training images' class
    # means, which leans towards them (share 0.62 in the feature space of the quality head)
    params = write_params(tmp_path / "params.yaml", evaluate={"num_samples": 300, "kid_subset_size": 100},
                          register={"model_name": "private-gan", "eval_samples": 300, "max_memorisation": 0.7})  # fmt: skip
    D = build_network("dcgan.D", width=8, num_classes=10, channels=1, image_size=8)
    copier, copier_kwargs = copying_generator(copier_images)
    fitted, fitted_spec = make_generator(prepared_digits, fit_steps=150)
    decisions = []
    for name, G, kwargs in [("copier", copier, copier_kwargs), ("fitted", fitted, fitted_spec["G_kwargs"])]:
        gen, disc = export(tmp_path, G, kwargs, D, manifest, name)
        out = evaluate_model(tmp_path, params, prepared_digits, featurized_digits, gen, disc, name)
        decisions.append(register(params, gen, out, prepared_digits, featurized_digits, tmp_path / name / "decision.json"))
    refused, promoted = decisions
    audit = json.loads((tmp_path / "eval" / "copier" / "metrics.json").read_text())["privacy"]
    assert audit["dcr_share/pixel"] == audit["memorisation"] == 1.0
    assert not refused["promoted"] and refused["champion_version"] is None
    assert refused["reason"] == "privacy audit: dcr_share/pixel = 1.000 exceeds register.max_memorisation = 0.7 by 0.300"
    assert promoted["promoted"] and promoted["challenger_version"] == "2"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("private-gan", "champion").version) == "2"
    tags = client.get_model_version("private-gan", "1").tags
    assert tags["decision"] == "challenger" and tags["decision/reason"] == refused["reason"]
    assert float(tags["eval/privacy.dcr_share/pixel"]) == 1.0  # the figures are on the version
    fitted_audit = json.loads((tmp_path / "eval" / "fitted" / "metrics.json").read_text())["privacy"]
    assert float(client.get_model_version("private-gan", "2").tags["eval/privacy.memorisation"]) == pytest.approx(fitted_audit["memorisation"])


def test_max_memorisation_is_validated(tmp_path):
    from gan.config import load_params
    from gan.errors import GanError

    with pytest.raises(GanError, match="register.max_memorisation"):
        load_params(write_params(tmp_path / "params.yaml", register={"max_memorisation": 0.4}))


def test_register_needs_the_audit_when_the_gate_is_set(tmp_path):
    from gan.errors import GanError
    from gan.stages.register import privacy_refusal

    spec = {"task": "generate", "inference": "generate"}
    path = tmp_path / "metrics.json"
    with pytest.raises(GanError, match=r"metrics.json has no privacy section but register.max_memorisation is set; re-run the evaluate stage"):
        privacy_refusal({"fid": 3.0}, 0.6, path, spec)
    assert privacy_refusal({"fid": 3.0}, None, path, spec) is None  # no gate, nothing to check
    assert privacy_refusal({"privacy": {"dcr_share/pixel": 0.52, "mia_auroc/distance": 0.58}}, 0.6, path, spec) is None
    sentence = privacy_refusal({"privacy": {"dcr_share/pixel": 0.52, "mia_auroc/distance": 0.71}}, 0.6, path, spec)
    assert sentence == "privacy audit: mia_auroc/distance = 0.710 exceeds register.max_memorisation = 0.6 by 0.110"
