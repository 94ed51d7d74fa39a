"""Shared plumbing for the metrics: feature arrays in, float64 tensors out.

Every metric in this package takes features that were computed once by the
feature network (``[N, D]``) rather than images, so one pass over the generated
samples serves FID, KID, precision/recall and density/coverage alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

FeatureArray = torch.Tensor | np.ndarray


def as_float64(features: FeatureArray, name: str = "features") -> torch.Tensor:
    """``features`` as a CPU float64 tensor ``[N, D]``; float64 keeps covariances and sums exact enough."""
    t = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    t = t.detach().to("cpu", torch.float64)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {tuple(t.shape)}")
    return t


class PassThrough(nn.Module):
    """A "feature extractor" that returns its input unchanged.

    torchmetrics' image metrics accept any ``nn.Module`` as their feature network; we
    hand them precomputed features through this module so that the features of each
    image set are computed once and shared between all metrics.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)  # read by torchmetrics instead of a dummy forward pass

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features
