"""Distance to closest record (DCR): does a synthetic sample sit closer to the training set than to unseen real data?

    d_train = nearest_distances(samples, train)      # [N] distance of each sample to its nearest training image
    d_held = nearest_distances(samples, held_out)    # [N] the same against held-out real images (same count as train)
    dcr_share(d_train, d_held)                       # 0.5: no memorisation; 1.0: every sample is nearer a training image
    dcr_ratio_percentile(d_train, d_held, 5.0)       # small: some samples are (near-)copies of training images

Reference: Platzer & Reutterer, "Holdout-Based Fidelity and Privacy Assessment of
Mixed-Type Synthetic Data", Frontiers in Big Data 2021 (the share closer to training
than to a holdout of the same size, 0.5 for a generator that does not memorise), and
Park et al., "Data Synthesis based on Generative Adversarial Networks", VLDB 2018
(distance to closest record and its ratio). Both reference sets must hold the same
number of images: the nearest-neighbour distance shrinks as a set grows.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def nearest_distances(queries: torch.Tensor, reference: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(distance [N], index [N])`` of each row of ``queries [N, D]`` to its nearest row of ``reference [M, D]`` (L2)."""
    q, r = queries.double().flatten(1), reference.double().flatten(1)
    dists, idx = [], []
    for start in range(0, len(q), chunk):  # [chunk, M] distance blocks: memory stays O(chunk * M)
        d = torch.cdist(q[start : start + chunk], r)
        best = d.min(dim=1)
        dists.append(best.values)
        idx.append(best.indices)
    return torch.cat(dists), torch.cat(idx)


def dcr_share(d_train: torch.Tensor, d_held: torch.Tensor) -> float:
    """Share of samples strictly closer to a training image than to any held-out one (ties count half)."""
    closer = (d_train < d_held).double().mean()
    ties = (d_train == d_held).double().mean()
    return float(closer + 0.5 * ties)


def dcr_ratio_percentile(d_train: torch.Tensor, d_held: torch.Tensor, q: float = 5.0) -> float:
    """The ``q``-th percentile of ``d_train / d_held``: ~1 without memorisation, ~0 when some samples copy training images."""
    ratio = d_train.double() / d_held.double().clamp_min(1e-12)
    return float(np.percentile(ratio.cpu().numpy(), q))
