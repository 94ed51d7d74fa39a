"""Can the metrics' feature space tell? FID of mildly degraded real images against the real-vs-real floor.

    report = sensitivity(feature_net, train_x, val_x, seed=0)
    report["sensitivity/fid_floor"], report["sensitivity/fid_blur"], report["sensitivity/fid_noise"]

A feature network trained to tell a few classes apart can collapse onto what separates
them and ignore sharpness and texture: on a two-class faces / non-faces set, real
images blurred by 0.7 px scored an FID *below* the real-vs-real floor. The featurize
stage reports these figures, and a warning line when blurring barely moves FID, so a
user learns before training whether FID/KID can see blurry or noisy samples at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gan.metrics import fid

BLUR_SIGMA = 0.7  # pixels: visibly soft, the kind of blur a weak generator shows
NOISE_STD = 0.1  # of the pixel range [0, 1] (0.2 in the [-1, 1] the images are stored in)
# Blurred images whose FID is less than this multiple of the floor are "barely seen".
MIN_BLUR_RATIO = 1.5


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x [N, C, H, W]`` blurred by a Gaussian of ``sigma`` pixels (reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)  # reflect padding needs pad < size
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # [2r+1]
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)  # along W
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)  # along H


def add_noise(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """``x`` in [-1, 1] plus Gaussian noise of ``std`` (in [0, 1] pixel units), clipped back to [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return (x + 2 * std * torch.randn(x.shape, generator=gen)).clamp(-1, 1)


def sensitivity(feature_net: Any, train_x: Any, val_x: Any, seed: int = 0, batch_size: int = 500) -> dict[str, float]:
    """FID of the validation split as is (the floor), blurred and noised, each against the training split.

    Both sides hold the same number of images in every comparison (FID's bias depends on it).
    """
    n = min(len(train_x), len(val_x))
    rng = np.random.default_rng(seed)
    train_rows, val_rows = np.sort(rng.choice(len(train_x), n, replace=False)), np.sort(rng.choice(len(val_x), n, replace=False))
    reference = feature_net.features(train_x[train_rows], batch_size)
    val = torch.as_tensor(np.asarray(val_x[val_rows], dtype=np.float32))  # [n, C, H, W]
    floor = fid(reference, feature_net.features(val, batch_size))
    blurred = fid(reference, feature_net.features(gaussian_blur(val, BLUR_SIGMA), batch_size))
    noised = fid(reference, feature_net.features(add_noise(val, NOISE_STD, seed), batch_size))
    return {
        "sensitivity/fid_floor": float(floor),
        "sensitivity/fid_blur": float(blurred),
        "sensitivity/fid_noise": float(noised),
        "sensitivity/blur_ratio": float(blurred / floor) if floor > 0 else math.inf,
    }


def blind_spot_warning(report: dict[str, float]) -> str | None:
    """One sentence when blurred real images score an FID close to the real-vs-real floor, else None."""
    if report["sensitivity/blur_ratio"] >= MIN_BLUR_RATIO:
        return None
    return (
        f"the feature space barely tells real images blurred by {BLUR_SIGMA} px from sharp ones (FID {report['sensitivity/fid_blur']:.3g} "
        f"vs real-vs-real floor {report['sensitivity/fid_floor']:.3g}), so FID/KID will not see blurry samples; "
        f"raise featurize.quality_weight (its sharp/blurred/noisy head), featurize.feature_dim or featurize.width, "
        f"or set featurize.inception_weights"
    )
