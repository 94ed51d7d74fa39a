"""Membership-inference AUROC: how well an attack's scores tell training images (members) from unseen ones.

    membership_auroc(scores_on_train, scores_on_held_out)   # 0.5: nothing leaks; 1.0: membership is plain

The attack scores each image (higher = "was in the training set"); the AUROC is the
probability that a random member scores above a random non-member (ties count half),
computed as the Mann-Whitney U statistic. References: Hayes et al., "LOGAN: Membership
Inference Attacks Against Generative Models", PoPETs 2019 (the discriminator's score as
the attack); Chen et al., "GAN-Leaks: A Taxonomy of Membership Inference Attacks against
Generative Models", CCS 2020 (the distance from an image to the nearest synthetic sample).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def membership_auroc(members: torch.Tensor, non_members: torch.Tensor) -> float:
    """AUROC of scores ``members [M]`` against ``non_members [K]`` (higher score = predicted member)."""
    a = np.asarray(members, dtype=np.float64).ravel()
    b = np.asarray(non_members, dtype=np.float64).ravel()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("membership AUROC needs at least one member and one non-member score")
    ranks = rankdata(np.concatenate([a, b]))  # average ranks: ties count half
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2
    return float(u / (len(a) * len(b)))
