"""Fréchet Inception Distance.

Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter 2017, "GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium" (NeurIPS), eq. (6):

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

where (mu, S) are the mean and covariance of the features of each set. The value is
computed by torchmetrics' ``FrechetInceptionDistance`` (float64 sums, eigenvalue
form of the matrix square root), fed with precomputed features.
"""

from __future__ import annotations

from torchmetrics.image.fid import FrechetInceptionDistance

from gan.metrics._features import FeatureArray, PassThrough, as_float64


def fid(real_features: FeatureArray, fake_features: FeatureArray) -> float:
    """FID between two feature sets ``[N_r, D]`` and ``[N_g, D]`` (each needs N >= 2); lower is better."""
    real = as_float64(real_features, "real_features")
    fake = as_float64(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID needs at least two samples in each set")
    # sync_on_compute=False: callers may run inside a DDP job on rank 0 only; a
    # cross-process sync there would wait forever for the other ranks.
    metric = FrechetInceptionDistance(feature=PassThrough(real.shape[1]), sync_on_compute=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    # tiny negative values are rounding error of a distance that is zero
    return max(float(metric.compute()), 0.0)

