"""Differentiable Augmentation (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training").

    x_aug = diff_augment(x, "color,translation,cutout")   # [N, C, H, W] -> [N, C, H, W]

D only ever sees augmented images, real and fake alike: apply the same policy to
both in the D step and to the fakes in the G step. Every transform is differentiable
w.r.t. ``x`` so G's gradient flows through it. Each sample draws its own random
parameters. The transforms follow the authors' reference implementation for images
in [-1, 1]:

- color: brightness +U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5);
- translation: integer shift by up to 1/8 of the size, zero padding;
- cutout: one zeroed square of half the size at a random centre.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U[0, 1) per sample, shaped ``[N, 1, 1, 1]`` to broadcast over an image."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def rand_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add U(-0.5, 0.5) per sample."""
    return x + (_uniform(x, generator) - 0.5)


def rand_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale the distance to the per-pixel channel mean by U(0, 2) (no-op for 1 channel)."""
    mean = x.mean(dim=1, keepdim=True)  # [N, 1, H, W]
    return (x - mean) * (_uniform(x, generator) * 2.0) + mean


def rand_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale the distance to the per-image mean by U(0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    return (x - mean) * (_uniform(x, generator) + 0.5) + mean


def rand_translation(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by whole pixels, up to ``ratio`` of its size each way; vacated pixels are 0."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), generator=generator, device=x.device)  # [N, 1, 1]
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), generator=generator, device=x.device)
    # Output pixel (i, j) reads input pixel (i + dy, j + dx) of the image padded by one
    # zero pixel; out-of-range reads clamp onto that padding.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)  # [N, H, 1]
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)  # [N, 1, W]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # [N, C, H + 2, W + 2]
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # [N, C, H, W]


def rand_cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero one square of ``ratio`` times the size per image, centred anywhere in it (clipped)."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), generator=generator, device=x.device)  # [N, 1, 1]
    cx = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), generator=generator, device=x.device)
    top, left = cy - size_h // 2, cx - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)  # [N, H, W]
    return x * (~inside).unsqueeze(1).to(x.dtype)


AUGMENTS: dict[str, list[Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]]] = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}


def parse_policy(policy: str) -> list[str]:
    """``"color, cutout"`` -> ``["color", "cutout"]``; ValueError for unknown names."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in AUGMENTS]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy '{unknown[0]}'; allowed: {', '.join(AUGMENTS)}")
    return names


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the comma-separated ``policy`` (color, translation, cutout) to ``x [N, C, H, W]``.

    An empty policy returns ``x`` unchanged. ``generator`` makes the draws reproducible.
    """
    for name in parse_policy(policy):
        for augment in AUGMENTS[name]:
            x = augment(x, generator)
    return x
