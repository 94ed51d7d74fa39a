"""Kernel Inception Distance.

Bińkowski, Sutherland, Arbel, Gretton 2018, "Demystifying MMD GANs" (ICLR), sec. 4:
the squared maximum mean discrepancy between the two feature sets under the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, estimated without bias (the U-statistic:
diagonal terms of k(x, x') and k(y, y') are left out), averaged over random subsets.
Unlike FID it has an unbiased estimator, so it can be compared across sample sizes
and is ~0 in expectation for two draws of one distribution (it can be negative).

Computed by torchmetrics' ``KernelInceptionDistance`` fed with precomputed features.
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics.image.kid import KernelInceptionDistance

from gan.metrics._features import FeatureArray, PassThrough, as_float64


def kid(
    real_features: FeatureArray,
    fake_features: FeatureArray,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
) -> float:
    """Mean unbiased MMD^2 over ``subsets`` random subsets of ``min(subset_size, N_r, N_g)`` rows each.

    Deterministic for ``seed``: torchmetrics draws its subsets from the global torch
    generator, which is forked and seeded here so the caller's random state is untouched.
    """
    real = as_float64(real_features, "real_features")
    fake = as_float64(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    size = min(int(subset_size), len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least two samples in each set")
    with warnings.catch_warnings():
        # torchmetrics warns on every construction that it keeps features in memory;
        # that is the point here (they are small and already computed)
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=PassThrough(real.shape[1]), subsets=subsets, subset_size=size, sync_on_compute=False
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, _std = metric.compute()
    return float(mean)
