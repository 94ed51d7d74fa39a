"""The feature space of the metrics: a small network trained on the user's own data.

    python pipelines/featurize.py          # trains it and writes models/features/

    net = load_feature_net("models/features")
    phi = net.features(x)                  # x [N, C, H, W] in [-1, 1] -> [N, D]
    logits = net.logits(x)                 # [N, num_classes], None for unlabelled data

Labelled data trains a classifier (cross-entropy), whose penultimate layer gives the
features (standardised with the training split's mean and spread) and whose logits give the Inception-Score-style score, mode coverage and
conditional accuracy. Unlabelled data trains an autoencoder (mean squared
reconstruction error) whose bottleneck gives the features. Both are small CNNs that
train in seconds on a CPU, which is why the whole pipeline can compare generators
by FID without ImageNet weights.

Beside either objective, a self-supervised quality head (``featurize.quality_weight``,
0.1 by default) learns to tell sharp images from blurred and noisy copies of them
(:func:`degrade`). A classifier alone keeps only what separates its classes: on two
classes of photo patches, real images blurred by 0.7 px scored an FID only 1.9x the
real-vs-real floor (median of 3 seeds), 49x with the head at its default weight, with the same
accuracy (bench/feature_sensitivity.py, docs/benchmarks.md).

Optionally the standard Inception-v3 pool features (2048-d, Szegedy et al. 2016;
the space of Heusel et al.'s FID) replace the domain features when the user has
torchvision's weights on disk (``featurize.inception_weights``: a path, or ``cache``
for ``$TORCH_HOME/hub/checkpoints``). They are never downloaded.

    models/features/
      model.safetensors   the domain network's weights (tensors only: no pickle)
      config.json         kind, net kwargs, class names, validation metrics, inception path + sha256
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from gan.atomic import atomic_dir, file_sha256
from gan.config import FeaturizeConfig
from gan.errors import GanError
from gan.sensitivity import add_noise, gaussian_blur

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "gan-features/1"
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision's IMAGENET1K_V1 file name
INCEPTION_URL = f"https://download.pytorch.org/models/{INCEPTION_FILE}"
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048

ImageArray = torch.Tensor | np.ndarray


class DomainNet(nn.Module):
    """A small CNN: ``encode(x [N, C, S, S]) -> [N, feature_dim]``, plus a classifier head or a decoder.

    Encoder: a 3x3 convolution at full resolution, then one strided 3x3 convolution
    per halving down to 4x4 (BatchNorm + LeakyReLU after each), then a linear layer to
    ``feature_dim``; about 2.4 M multiply-adds per 16x16 image, so it trains in seconds. The features
    are that layer's output before any nonlinearity, so they are dense (no dead
    ReLU zeros) and closer to the Gaussian that FID assumes.
    """

    def __init__(self, channels: int, image_size: int, width: int = 32, feature_dim: int = 128, num_classes: int = 0,
                 quality_head: bool = False) -> None:  # fmt: skip
        super().__init__()
        if image_size < 4 or image_size & (image_size - 1):
            raise ValueError(f"image_size = {image_size} must be a power of two >= 4")
        self.channels, self.image_size, self.width = channels, image_size, width
        self.feature_dim, self.num_classes = feature_dim, num_classes
        stages = int(math.log2(image_size // 4))  # stride-2 steps from S to 4x4
        widths = [min(width * 2**i, width * 8) for i in range(stages + 1)]
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1), nn.BatchNorm2d(widths[0]), nn.LeakyReLU(0.2)]
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(w_in, w_out, 3, stride=2, padding=1), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers, nn.Flatten())  # [N, widths[-1] * 16]
        self.to_features = nn.Linear(widths[-1] * 16, feature_dim)
        self.head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(feature_dim, num_classes)) if num_classes else None
        # the decoder exists only for unlabelled data (autoencoder objective)
        self.decoder = None if num_classes else _Decoder(channels, widths, feature_dim)
        # sharp / blurred / noisy from the features (self-supervised, see train_feature_net): a
        # classifier alone keeps only what separates its classes, and with two classes that
        # leaves FID blind to blur
        self.quality = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(feature_dim, len(DEGRADATIONS))) if quality_head else None
        # per-dimension statistics of the training split's features, set by calibrate();
        # identity until then so that training is unaffected
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_scale", torch.ones(feature_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_features(self.trunk(x))  # [N, feature_dim]

    def standardize(self, phi: torch.Tensor) -> torch.Tensor:
        """The metric features: ``phi`` with zero mean and unit variance per dimension on the training split.

        KID's kernel (x.y / d + 1)^3 expects features of order one, as Inception's pool
        features are; a classifier's penultimate layer grows to tens during training and
        the kernel values (and KID's variance) explode with it. One fixed affine map per
        feature network also puts FID on the same scale after every featurize run.
        """
        return (phi - self.feature_mean) / self.feature_scale

    @torch.no_grad()
    def calibrate(self, x: np.ndarray, batch_size: int = 500) -> None:
        """Set the standardisation from images ``x`` (the training split), in eval mode."""
        self.eval()
        phi = torch.cat([self.encode(_as_tensor(x[s : s + batch_size])) for s in range(0, len(x), batch_size)]).double()
        self.feature_mean.copy_(phi.mean(0).float())
        self.feature_scale.copy_(phi.std(0).clamp_min(1e-6).float())

    def classify(self, phi: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise ValueError("this feature network was trained without labels and has no classifier")
        return self.head(phi)  # [N, num_classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training output: class logits, or the reconstruction for the autoencoder."""
        phi = self.encode(x)
        return self.classify(phi) if self.head is not None else self.decoder(phi)

    def degradation_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3]`` logits of sharp / blurred / noisy (the quality head)."""
        return self.quality(self.encode(x))


class _Decoder(nn.Module):
    """The encoder mirrored: ``[N, feature_dim] -> [N, C, S, S]`` in [-1, 1]."""

    def __init__(self, channels: int, widths: list[int], feature_dim: int) -> None:
        super().__init__()
        self.w0 = widths[-1]
        self.project = nn.Linear(feature_dim, widths[-1] * 16)
        ups: list[nn.Module] = []
        for w_in, w_out in zip(widths[::-1][:-1], widths[::-1][1:], strict=True):
            ups += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2)]
        self.ups = nn.Sequential(*ups)
        self.to_image = nn.Conv2d(widths[0], channels, 3, padding=1)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        h = self.project(phi).view(len(phi), self.w0, 4, 4)  # [N, w, 4, 4]
        return torch.tanh(self.to_image(self.ups(h)))  # [N, C, S, S]


class FeatureNet(nn.Module):
    """What the metrics see: ``features(x)`` and ``logits(x)`` for images in [-1, 1].

    ``features`` come from the domain network, or from Inception-v3 when one is
    attached; ``logits`` always come from the domain classifier (None without labels).
    Inputs may be tensors or (memory-mapped) arrays of any length: they are processed
    in batches without gradients, in eval mode, on the network's device.
    """

    def __init__(self, domain: DomainNet, spec: dict[str, Any], inception: nn.Module | None = None) -> None:
        super().__init__()
        self.domain = domain.eval()
        self.inception = None if inception is None else inception.eval()
        self.spec = spec
        self.kind: str = "inception" if inception is not None else spec["kind"]
        self.channels, self.image_size = domain.channels, domain.image_size
        self.num_classes: int = domain.num_classes
        self.class_names: list[str] = list(spec.get("class_names") or [])
        self.num_features: int = INCEPTION_DIM if inception is not None else domain.feature_dim

    def train(self, mode: bool = True) -> FeatureNet:
        """Stay in eval mode: the metrics' feature space must not move (BatchNorm statistics)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.domain.parameters()).device

    @torch.no_grad()
    def embed(self, x: ImageArray, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features [N, D], logits [N, K] | None)`` in one pass over ``x``; float32 on the CPU."""
        self._check_shape(x)
        feats, logits = [], []
        for start in range(0, len(x), batch_size):
            xb = _as_tensor(x[start : start + batch_size]).to(self.device)
            phi = self.domain.encode(xb)  # [B, feature_dim], what the classifier head was trained on
            if self.domain.head is not None:
                logits.append(self.domain.classify(phi).float().cpu())
            if self.inception is not None:
                feats.append(self.inception(_inception_input(xb)).float().cpu())  # [B, 2048]
            else:
                feats.append(self.domain.standardize(phi).float().cpu())
        return torch.cat(feats), (torch.cat(logits) if logits else None)

    def features(self, x: ImageArray, batch_size: int = 500) -> torch.Tensor:
        """Features ``[N, D]`` of images ``x [N, C, H, W]`` in [-1, 1]."""
        return self.embed(x, batch_size)[0]

    def logits(self, x: ImageArray, batch_size: int = 500) -> torch.Tensor | None:
        """Class logits ``[N, num_classes]``, or None when the network was trained without labels."""
        if self.domain.head is None:
            return None
        with torch.no_grad():
            self._check_shape(x)
            out = [self.domain(_as_tensor(x[s : s + batch_size]).to(self.device)).float().cpu() for s in range(0, len(x), batch_size)]
        return torch.cat(out)

    def _check_shape(self, x: ImageArray) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != want or len(x) == 0:
            raise GanError(
                f"images of shape {tuple(x.shape)} do not match the feature network's [N, {want[0]}, {want[1]}, {want[2]}]; "
                "re-run the featurize stage on the current prepared data (dvc repro featurize)."
            )


def _as_tensor(x: ImageArray) -> torch.Tensor:
    # np.array copies the rows out of a read-only memmap (torch refuses non-writable arrays)
    return x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, dtype=np.float32))


def _inception_input(x: torch.Tensor) -> torch.Tensor:
    """[N, C, S, S] in [-1, 1] -> [N, 3, 299, 299]: the range torchvision's Google weights expect."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise GanError(f"Inception-v3 features need 1- or 3-channel images, got {x.shape[1]} channels.")
    return F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- training


def train_feature_net(
    train_x: np.ndarray,
    train_y: np.ndarray | None,
    val_x: np.ndarray,
    val_y: np.ndarray | None,
    num_classes: int,
    cfg: FeaturizeConfig,
) -> tuple[DomainNet, dict[str, float]]:
    """Train the classifier (labels given) or the autoencoder (no labels); return it and validation metrics."""
    start = time.perf_counter()
    labelled = train_y is not None and num_classes > 0
    torch.manual_seed(cfg.seed)
    net = DomainNet(int(train_x.shape[1]), int(train_x.shape[2]), cfg.width, cfg.feature_dim, num_classes if labelled else 0,
                    quality_head=cfg.quality_weight > 0)  # fmt: skip
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    train_loss = float("nan")
    for _ in range(cfg.epochs):
        net.train()
        total, seen = 0.0, 0
        for rows in _batches(len(train_x), cfg.batch_size, rng):
            xb = _as_tensor(train_x[rows])
            loss = _loss(net, xb, None if not labelled else torch.from_numpy(np.array(train_y[rows], dtype=np.int64)))
            if net.quality is not None:
                degraded, kinds = degrade(xb, gen)
                loss = loss + cfg.quality_weight * F.cross_entropy(net.degradation_logits(degraded), kinds)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * len(rows), seen + len(rows)
        train_loss = total / max(seen, 1)
    net.calibrate(train_x)
    metrics = evaluate_feature_net(net, val_x, val_y if labelled else None, cfg.batch_size)
    metrics.update(train_loss=train_loss, epochs=cfg.epochs, seconds=round(time.perf_counter() - start, 3))
    return net.eval(), metrics


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled row batches; rows sorted within a batch so memmap reads go forward."""
    perm = rng.permutation(n)
    # a final batch of one would break BatchNorm's training statistics
    return [np.sort(perm[s : s + batch_size]) for s in range(0, n, batch_size) if len(perm[s : s + batch_size]) > 1]


# What the quality head tells apart, and the ranges the degradations are drawn from: wider
# than the featurize report's fixed probe (blur 0.7 px, noise 0.1), so the features learn
# sharpness and grain in general rather than one setting.
DEGRADATIONS = ("sharp", "blurred", "noisy")
BLUR_RANGE = (0.4, 1.5)  # Gaussian sigma in pixels
NOISE_RANGE = (0.03, 0.2)  # std in [0, 1] pixel units


def degrade(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [N, C, S, S]`` split in three: kept sharp, blurred, noised; returns the images and their kind ``[N]``."""
    n = len(x)
    kinds = torch.randint(0, len(DEGRADATIONS), (n,), generator=gen)
    out = x.clone()
    blur, noise = kinds == 1, kinds == 2
    if blur.any():
        sigma = float(torch.empty(1).uniform_(*BLUR_RANGE, generator=gen))
        out[blur] = gaussian_blur(x[blur], sigma)
    if noise.any():
        std = float(torch.empty(1).uniform_(*NOISE_RANGE, generator=gen))
        out[noise] = add_noise(x[noise], std, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    return out, kinds


def _loss(net: DomainNet, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    out = net(x)
    return F.cross_entropy(out, y) if y is not None else F.mse_loss(out, x)


@torch.no_grad()
def evaluate_feature_net(net: DomainNet, x: np.ndarray, y: np.ndarray | None, batch_size: int = 500) -> dict[str, float]:
    """``val_loss`` (cross-entropy or reconstruction MSE) and, with labels, ``val_accuracy``."""
    net.eval()
    loss_sum, correct = 0.0, 0
    for s in range(0, len(x), batch_size):
        xb = _as_tensor(x[s : s + batch_size])
        yb = None if y is None else torch.from_numpy(np.array(y[s : s + batch_size], dtype=np.int64))
        loss_sum += float(_loss(net, xb, yb)) * len(xb)
        if yb is not None:
            correct += int((net(xb).argmax(1) == yb).sum())
    metrics = {"val_loss": loss_sum / len(x)}
    if y is not None:
        metrics["val_accuracy"] = correct / len(x)
    return metrics


# ----------------------------------------------------------------------------- save / load


def save_feature_net(net: DomainNet, out_dir: str | os.PathLike, spec: dict[str, Any],
                     also: Callable[[Path], None] | None = None) -> Path:  # fmt: skip
    """Write ``model.safetensors`` + ``config.json`` (``spec`` plus the net's kwargs) atomically.

    ``also(folder)`` writes more files into the temporary directory before it replaces
    ``out_dir`` (featurize's caption encoder), so the directory is complete or absent.
    """
    config = {
        "format": FORMAT,
        "kind": "classifier" if net.num_classes else "autoencoder",
        "net_kwargs": {
            "channels": net.channels,
            "image_size": net.image_size,
            "width": net.width,
            "feature_dim": net.feature_dim,
            "num_classes": net.num_classes,
            "quality_head": net.quality is not None,
        },
        **spec,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if also is not None:
            also(tmp)
    return Path(out_dir)


def load_feature_net(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> FeatureNet:
    """Rebuild the feature network from ``config.json`` + safetensors (and Inception-v3 when configured)."""
    model_dir = Path(model_dir)
    config_path, weights = model_dir / CONFIG, model_dir / WEIGHTS
    if not config_path.exists():
        raise GanError(f"{config_path} does not exist; run the featurize stage first (dvc repro featurize).")
    try:
        spec = json.loads(config_path.read_text())
        kwargs = spec["net_kwargs"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise GanError(f"{config_path} is not a feature-network config; re-run the featurize stage (dvc repro -f featurize).") from None
    if not weights.exists():
        raise GanError(f"{weights} does not exist; re-run the featurize stage (dvc repro -f featurize).")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise GanError(f"{weights} cannot be read ({type(err).__name__}); re-run the featurize stage (dvc repro -f featurize).") from None
    net = DomainNet(**kwargs)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise GanError(f"{weights} does not match {config_path}; re-run the featurize stage (dvc repro -f featurize).") from None
    inception = None
    if spec.get("inception"):
        path = Path(spec["inception"]["path"])
        if not path.exists():
            raise GanError(f"Inception-v3 weights {path} recorded in {config_path} are missing; restore the file or re-run featurize without featurize.inception_weights.")
        if file_sha256(path) != spec["inception"]["sha256"]:
            raise GanError(f"Inception-v3 weights {path} changed since featurize ran; re-run the featurize stage (dvc repro -f featurize).")
        inception = load_inception(path)
    return FeatureNet(net, spec, inception).to(device)


# ----------------------------------------------------------------------------- Inception-v3


def resolve_inception_weights(value: str) -> Path:
    """The weights file named by ``featurize.inception_weights``: a path, or ``cache`` (torch hub's directory)."""
    if value == "cache":
        # torch.hub.get_dir() honours TORCH_HOME, where torchvision keeps downloaded weights
        return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return Path(value).expanduser()


def load_inception(path: str | os.PathLike) -> nn.Module:
    """torchvision's Inception-v3 with the state dict at ``path``; returns pool features ``[N, 2048]``.

    The network is built with ``weights=None`` (nothing is fetched) and filled from a
    ``.pth`` read with ``weights_only=True`` or from ``.safetensors``.
    """
    from torchvision.models import inception_v3

    path = Path(path)
    if not path.is_file():
        raise GanError(
            f"featurize.inception_weights: {path} does not exist; weights are never downloaded, "
            f"so fetch {INCEPTION_URL} yourself and point the key at the file (or set it to null)."
        )
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refusals, truncated files, bad headers
        raise GanError(f"featurize.inception_weights: {path} cannot be read as a tensor state dict ({type(err).__name__}); use torchvision's {INCEPTION_FILE}.") from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise GanError(f"featurize.inception_weights: {path} is not a torchvision Inception-v3 state dict; use torchvision's {INCEPTION_FILE}.")
    aux = any(k.startswith("AuxLogits.") for k in state)
    # transform_input=False: our images are already in [-1, 1], the range the Google weights
    # were trained on (torchvision's transform_input only maps ImageNet-normalised input there)
    net = inception_v3(weights=None, aux_logits=aux, transform_input=False, init_weights=False, num_classes=int(state["fc.weight"].shape[0]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError:
        raise GanError(f"featurize.inception_weights: {path} does not fit torchvision's Inception-v3; use torchvision's {INCEPTION_FILE}.") from None
    net.fc = nn.Identity()  # forward now ends at the 2048-d average pool (dropout is off in eval)
    return net.eval()

