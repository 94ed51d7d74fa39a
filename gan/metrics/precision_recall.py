"""Improved precision and recall.

Kynkäänniemi, Karras, Laine, Lehtinen, Aila 2019, "Improved Precision and Recall
Metric for Assessing Generative Models" (NeurIPS), sec. 2: each set's manifold is
the union of balls around its points with radius the distance to the point's k-th
nearest neighbour in the same set.

    precision = share of fake samples inside the real manifold   (fidelity)
    recall    = share of real samples inside the fake manifold   (diversity)

Written here because torchmetrics has no such metric; the ball test uses a strict
``<`` as in the reference implementation that Naeem et al. 2020 published with
density/coverage (clovaai/generative-evaluation-prdc). Distances are computed in
row chunks so memory stays at ``chunk x N`` whatever the sample count.
"""

from __future__ import annotations

import torch

from gan.metrics._features import FeatureArray, as_float64

CHUNK = 1024  # rows of the distance matrix held at once (1024 x 10k float64 = 80 MB)


def distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[len(a), len(b)]``, computed directly from the differences.

    The faster ``|a|^2 + |b|^2 - 2ab`` form loses digits to cancellation and rounds
    one pair differently depending on the matrix it sits in, so a sample that lies
    exactly on a ball's boundary (a copied training image, a tie in k-NN) would fall
    in or out by chance; the direct form gives every pair one exact answer.
    """
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``features [N, D]`` to its k-th nearest other row: ``[N]``."""
    n = len(features)
    if not 1 <= k < n:
        raise ValueError(f"nearest_k = {k} needs more than {k} samples per set, got {n}")
    radii = []
    for start in range(0, n, CHUNK):
        d = distances(features[start : start + CHUNK], features)  # [chunk, N]
        # the smallest distance is the point itself (0), so the k-th neighbour is the (k+1)-th value
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def inside_manifold(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Bool ``[N_points]``: whether each point lies strictly inside some ball (centre, radius)."""
    inside = []
    for start in range(0, len(points), CHUNK):
        d = distances(points[start : start + CHUNK], centres)  # [chunk, N_centres]
        inside.append((d < radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(real_features: FeatureArray, fake_features: FeatureArray, nearest_k: int = 3) -> tuple[float, float]:
    """``(precision, recall)`` in [0, 1] of fake against real features (the paper uses k = 3)."""
    real = as_float64(real_features, "real_features")
    fake = as_float64(fake_features, "fake_features")
    precision = inside_manifold(fake, real, knn_radii(real, nearest_k)).double().mean()
    recall = inside_manifold(real, fake, knn_radii(fake, nearest_k)).double().mean()
    return float(precision), float(recall)
