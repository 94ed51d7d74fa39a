"""Super-resolution metrics: Y-channel PSNR and SSIM, and a sliced Wasserstein distance of detail patches.

    psnr_y(sr, hr, crop=4)        # sr, hr [1, C, H, W] in [-1, 1] -> dB (higher is better)
    ssim_y(sr, hr, crop=4)        # structural similarity on Y (higher is better)
    detail_swd(sr, hr, seed=0)    # distance of the high-frequency patch distributions (lower is better)

PSNR and SSIM follow the SR papers' protocol (BasicSR's ``calculate_psnr`` with
``test_y_channel``): the luma Y of ITU-R BT.601 (16..235) and ``crop`` border pixels
(the scale) removed. SSIM is torchmetrics' (Wang et al. 2004, 11x11 Gaussian window).

PSNR rewards the mean of the plausible outputs (blur); what the GAN phase adds is
texture, which PSNR cannot see. ``detail_swd`` measures it: the sliced Wasserstein
distance (Rabin et al. 2011; used for GANs by Karras et al. 2018) between random 7x7
patches of the detail layer (image minus its 5x5 box blur) of the upscaled and of the
original image. A blurry result has too little detail energy and a far distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from gan.metrics.swd import sliced_wasserstein

PATCH = 7
PATCHES = 4096
PROJECTIONS = 128


def y_channel(x: torch.Tensor) -> torch.Tensor:
    """``x [N, C, H, W]`` in [-1, 1] -> Y ``[N, 1, H, W]`` in [0, 1] (BT.601 luma, 16..235; a grayscale image as it is)."""
    x = (x.float().clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        return x
    w = torch.tensor([65.481, 128.553, 24.966], device=x.device).view(1, 3, 1, 1)
    return ((x * w).sum(1, keepdim=True) + 16.0) / 255.0


def _crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    return x[..., crop:-crop, crop:-crop] if crop else x


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0) -> float:
    """PSNR (dB) on Y after quantising to 8 bits (as a saved image is): 10 log10(1 / MSE)."""
    a = torch.round(_crop(y_channel(sr), crop) * 255) / 255
    b = torch.round(_crop(y_channel(hr), crop) * 255) / 255
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(1.0 / mse, dtype=torch.float64)).item()


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0) -> float:
    """SSIM (Wang et al. 2004) on Y, torchmetrics' implementation, data range 1."""
    a, b = _crop(y_channel(sr), crop), _crop(y_channel(hr), crop)
    return float(structural_similarity_index_measure(a.double(), b.double(), data_range=1.0))


def detail_layer(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 5x5 box blur (reflect-padded): the high frequencies ``[N, C, H, W]``."""
    x = x.float()
    return x - F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, stride=1)


def random_patches(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random ``PATCH x PATCH`` patches of ``x [1, C, H, W]``, flattened: ``[n, C * PATCH^2]``."""
    _, c, h, w = x.shape
    ys = torch.randint(0, h - PATCH + 1, (n,), generator=generator)
    xs = torch.randint(0, w - PATCH + 1, (n,), generator=generator)
    offs = torch.arange(PATCH)
    rows = (ys[:, None] + offs)[:, :, None].expand(n, PATCH, PATCH)  # [n, P, P]
    cols = (xs[:, None] + offs)[:, None, :].expand(n, PATCH, PATCH)
    return x[0][:, rows, cols].permute(1, 0, 2, 3).reshape(n, -1).cpu()  # [n, C*P*P]


def detail_swd(sr: torch.Tensor, hr: torch.Tensor, seed: int = 0, patches: int = PATCHES, projections: int = PROJECTIONS) -> float:
    """SWD between detail-layer patches of ``sr`` and ``hr`` (``[1, C, H, W]`` in [-1, 1]), x 100 for readability."""
    g = torch.Generator().manual_seed(seed)
    pa = random_patches(detail_layer(sr), patches, g)
    pb = random_patches(detail_layer(hr), patches, g)
    return 100.0 * sliced_wasserstein(pa, pb, projections, g)
