"""Density and coverage.

Naeem, Oh, Uh, Choi, Yoo 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models" (ICML), eqs. (4) and (5), with B(x, r) the ball around real
sample X_i whose radius NND_k(X_i) is the distance to its k-th nearest real neighbour:

    density  = 1/(k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]     (M fake samples Y_j)
    coverage = 1/N     sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))] (N real samples X_i)

Density counts how many real balls hold each fake sample (about 1 when the two
distributions match, more when fakes crowd dense real regions, and it is not bounded
by 1); coverage is the share of real samples with a fake one nearby. Unlike
precision/recall they are built from real-sample balls only, so outliers among the
fakes cannot inflate them. Written here because torchmetrics has no such metric;
it follows the authors' reference code (clovaai/generative-evaluation-prdc,
strict ``<``), chunked so memory stays bounded.
"""

from __future__ import annotations

import torch

from gan.metrics._features import FeatureArray, as_float64
from gan.metrics.precision_recall import CHUNK, distances, knn_radii


def density_coverage(real_features: FeatureArray, fake_features: FeatureArray, nearest_k: int = 5) -> tuple[float, float]:
    """``(density, coverage)`` of fake against real features (the paper uses k = 5)."""
    real = as_float64(real_features, "real_features")
    fake = as_float64(fake_features, "fake_features")
    radii = knn_radii(real, nearest_k)  # [N]
    balls_per_fake = torch.zeros(len(fake), dtype=torch.float64)  # [M]
    covered = []
    for start in range(0, len(real), CHUNK):
        inside = distances(real[start : start + CHUNK], fake) < radii[start : start + CHUNK, None]  # [chunk, M]
        balls_per_fake += inside.sum(dim=0)
        covered.append(inside.any(dim=1))
    density = balls_per_fake.sum() / (nearest_k * len(fake))
    coverage = torch.cat(covered).double().mean()
    return float(density), float(coverage)
