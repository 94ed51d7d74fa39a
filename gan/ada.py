"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"; reference: NVlabs/stylegan2-ada-pytorch training/augment.py).

    x = ada_augment(x, p)                      # [N, C, H, W], each op applied per sample with prob p
    p = ada_adjust(p, signs_mean, target=0.6, images=batch * interval, kimg=500)

Both real and fake images go through the same pipeline before D, so that D never sees
the unaugmented distribution and G cannot learn the augmentations (they are "non
leaking" for p < ~0.8). Implemented subset of the reference's ``bgc`` pipeline, in its
order: x-flip, 90-degree rotations, integer translation (up to 1/8 of the size, reflect
padding) -- the "blit" group -- and brightness, contrast, saturation (RGB only) of the
"color" group. Left out: the general geometric group (isotropic / anisotropic scaling,
arbitrary rotation, fractional translation, which need the reference's upfirdn
resampling), luma flip and hue rotation. Every op is differentiable in the pixels.
"""

from __future__ import annotations

import torch

BRIGHTNESS_STD = 0.2  # the reference's brightness_std
CONTRAST_STD = 0.5  # log2 std of the contrast factor
SATURATION_STD = 1.0  # log2 std of the saturation factor
XINT_MAX = 0.125  # integer translation, as a fraction of the image size


def _chosen(n: int, p: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """``[N] bool``: which samples an op applies to (each with probability ``p``)."""
    return torch.rand(n, device=device) < p


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-pad indices into ``0 .. size - 1`` (valid for shifts below ``size``)."""
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


def ada_augment(x: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    """Augment ``x [N, C, H, W]`` (in [-1, 1]); each op is applied to each sample with probability ``p``."""
    if x.dim() != 4:
        raise ValueError(f"ada_augment expects [N, C, H, W], got {list(x.shape)}")
    N, C, H, W = x.shape
    dev = x.device
    if not isinstance(p, torch.Tensor) and p <= 0.0:
        return x  # a tensor p stays on the device: no host sync to test it
    # x-flip
    flip = _chosen(N, p, dev)[:, None, None, None]
    x = torch.where(flip, x.flip(3), x)
    # 90-degree rotations (square images): k in {0, 1, 2, 3}
    if H == W:
        k = torch.randint(0, 4, (N,), device=dev) * _chosen(N, p, dev)
        rotated = [x, x.rot90(1, (2, 3)), x.rot90(2, (2, 3)), x.rot90(3, (2, 3))]
        x = torch.stack(rotated)[k, torch.arange(N, device=dev)]  # [N, C, H, W]
    # integer translation with reflect padding
    use = _chosen(N, p, dev)
    t = (torch.rand(N, 2, device=dev) * 2 - 1) * XINT_MAX * torch.tensor([H, W], device=dev)
    t = (t.round().long() * use[:, None]).clamp(-(min(H, W) - 1), min(H, W) - 1)  # [N, 2]
    iy = _reflect(torch.arange(H, device=dev)[None] - t[:, :1], H)  # [N, H]
    ix = _reflect(torch.arange(W, device=dev)[None] - t[:, 1:], W)  # [N, W]
    x = x[torch.arange(N, device=dev)[:, None, None], :, iy[:, :, None], ix[:, None, :]]  # [N, H, W, C]
    x = x.permute(0, 3, 1, 2)
    # brightness: x + b, b ~ N(0, 0.2)
    b = torch.randn(N, 1, 1, 1, device=dev) * BRIGHTNESS_STD
    x = torch.where(_chosen(N, p, dev)[:, None, None, None], x + b, x)
    # contrast: scale around the per-image mean by 2^N(0, 0.5); samples not chosen keep x
    # exactly ((x - m) * 1 + m is not x in floating point)
    c = torch.exp2(torch.randn(N, 1, 1, 1, device=dev) * CONTRAST_STD)
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = torch.where(_chosen(N, p, dev)[:, None, None, None], (x - mean) * c + mean, x)
    # saturation (RGB): scale the distance from the pixel's gray value by 2^N(0, 1)
    if C == 3:
        s = torch.exp2(torch.randn(N, 1, 1, 1, device=dev) * SATURATION_STD)
        gray = x.mean(dim=1, keepdim=True)
        x = torch.where(_chosen(N, p, dev)[:, None, None, None], (x - gray) * s + gray, x)
    return x


def ada_adjust(
    p: torch.Tensor, signs_mean: torch.Tensor, target: float, images: int, kimg: float
) -> torch.Tensor:
    """One ADA update of ``p`` (the reference's ``adjust``), without leaving the device.

    r_t = E[sign(D(x_real))];  p <- max(0, p + sign(r_t - target) * images / (kimg * 1000)),
    ``images`` being the real images shown since the last update (all ranks), so that p
    can move from 0 to 1 in ``kimg`` thousand images.
    """
    step = images / (kimg * 1000.0)
    return (p + torch.sign(signs_mean - target) * step).clamp(min=0.0)
