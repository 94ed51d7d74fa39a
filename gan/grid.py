"""Sample grids: a PNG of generated images, one row per class for a conditional G.

    images, nrow = sample_grid(G, seed=0)
    save_grid(images, "eval/samples.png", nrow)

torchvision's ``make_grid``/``save_image`` lay out and encode the picture; the file is
written through ``gan.atomic`` so an interrupted run never leaves half a PNG.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid, save_image

from gan.atomic import atomic_write_bytes
from gan.sampling import sample


def sample_grid(G: nn.Module, seed: int = 0, per_class: int = 10, max_classes: int = 20, unconditional: int = 64) -> tuple[torch.Tensor, int]:
    """``(images [N, C, H, W] in [-1, 1], nrow)`` for a grid.

    Conditional G: ``per_class`` samples of each of the first ``max_classes`` classes,
    one row per class. Unconditional G: ``unconditional`` samples in a square-ish grid.
    """
    num_classes = int(getattr(G, "num_classes", 0))
    device = next(G.parameters()).device
    if num_classes:
        rows = min(num_classes, max_classes)
        labels = [c for c in range(rows) for _ in range(per_class)]  # row r holds class r
        n, nrow = len(labels), per_class
    else:
        labels, n = None, unconditional
        nrow = max(1, round(unconditional**0.5))
    was_training = G.training
    try:
        G.eval()
        images = torch.cat([x for x, _ in sample(G, n, labels=labels, seed=seed, batch_size=n, device=device)])
    finally:
        G.train(was_training)
    return images, nrow


def grid_png(images: torch.Tensor, nrow: int, min_size: int = 32) -> bytes:
    """PNG bytes of ``images [N, C, H, W]`` in [-1, 1]; tiles smaller than ``min_size`` are enlarged (nearest)."""
    images = images.detach().float().cpu()
    scale = max(1, -(-min_size // images.shape[-1]))  # ceil: 16x16 digits become 32x32 tiles
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1), pad_value=1.0)
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    return buf.getvalue()


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int, min_size: int = 32) -> Path:
    """Write ``images`` as a PNG grid to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, grid_png(images, nrow, min_size))
