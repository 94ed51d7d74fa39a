"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, Sec. 5 and App. D).

    swd = pyramid_swd(real, fake, seed=0)     # [N, C, H, W] in [-1, 1] -> {"swd/32": ..., "swd/16": ..., "swd": mean}

Reference: tkarras/progressive_growing_of_gans, metrics/sliced_wasserstein.py. Per level of
a Laplacian pyramid (the full resolution down to 16x16, or the image itself when smaller),
``nhoods_per_image`` random 7x7 neighbourhoods per image are the descriptors; each set is
normalised per channel by its own mean and std; the distance is the sliced Wasserstein
distance with ``dirs`` random unit directions, repeated ``repeats`` times and averaged,
x 1e3 as the paper reports it. A fine level compares texture and detail, a coarse one
structure; their mean is the paper's summary. Written by hand: no metric library ships it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NHOOD = 7
BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # the reference's 5-tap Gaussian


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int, generator: torch.Generator) -> float:
    """SWD_1 between equal-sized point sets ``a``, ``b`` ``[n, D]``: mean over random unit directions u of
    W_1(<a, u>, <b, u>) = mean |sort(<a, u>) - sort(<b, u>)|."""
    u = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    # sorted along contiguous rows: sorting [n, projections] along dim 0 is ~5x slower on CPU
    pa = torch.sort((a.double() @ u).T.contiguous(), dim=1).values
    pb = torch.sort((b.double() @ u).T.contiguous(), dim=1).values
    return float((pa - pb).abs().mean())


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = (BINOMIAL[:, None] * BINOMIAL[None, :]).to(x)[None, None].repeat(c, 1, 1, 1)  # [C, 1, 5, 5]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Gaussian blur then x1/2 (the reference's pyr_down)."""
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """x2 by zero insertion, then the same blur x 4 (the reference's pyr_up)."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, h * 2, w * 2, dtype=x.dtype, device=x.device)
    up[:, :, ::2, ::2] = x
    return _blur(up) * 4.0


def laplacian_pyramid(x: torch.Tensor, min_resolution: int = 16) -> list[torch.Tensor]:
    """``[band at H, band at H/2, ..., Gaussian residual at min_resolution]`` of ``x [N, C, H, H]``."""
    levels, current = [], x.float()
    while current.shape[-1] > min_resolution:
        low = pyr_down(current)
        levels.append(current - pyr_up(low))
        current = low
    levels.append(current)
    return levels


def descriptors(x: torch.Tensor, per_image: int, generator: torch.Generator) -> torch.Tensor:
    """``per_image`` random NHOOD x NHOOD neighbourhoods of each image, normalised per channel: ``[N * per_image, C * 49]``."""
    n, c, h, w = x.shape
    size = min(NHOOD, h, w)
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    offs = torch.arange(size)
    rows = (ys[..., None] + offs)[..., :, None].expand(n, per_image, size, size)
    cols = (xs[..., None] + offs)[..., None, :].expand(n, per_image, size, size)
    idx = torch.arange(n)[:, None, None, None].expand_as(rows)
    d = x.permute(0, 2, 3, 1)[idx, rows, cols]  # [N, per_image, P, P, C]
    d = d.reshape(-1, size, size, c)
    d = (d - d.mean(dim=(0, 1, 2))) / d.std(dim=(0, 1, 2)).clamp_min(1e-8)
    return d.reshape(d.shape[0], -1)


def pyramid_swd(real: torch.Tensor, fake: torch.Tensor, seed: int = 0, nhoods_per_image: int = 128,
                dirs: int = 128, repeats: int = 4, min_resolution: int = 16) -> dict[str, float]:  # fmt: skip
    """SWD x 1e3 per pyramid level (``swd/<resolution>``) and their mean (``swd``), between ``real`` and ``fake``.

    Both ``[N, C, H, W]`` in [-1, 1] at the same resolution; N may differ (the larger set is
    subsampled to the smaller's descriptor count).
    """
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real {list(real.shape)} and fake {list(fake.shape)} must share channels and size")
    g = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    for band_r, band_f in zip(laplacian_pyramid(real, min_resolution), laplacian_pyramid(fake, min_resolution), strict=True):
        dr, df = descriptors(band_r.cpu(), nhoods_per_image, g), descriptors(band_f.cpu(), nhoods_per_image, g)
        m = min(len(dr), len(df))
        dr, df = dr[torch.randperm(len(dr), generator=g)[:m]], df[torch.randperm(len(df), generator=g)[:m]]
        value = sum(sliced_wasserstein(dr, df, dirs, g) for _ in range(repeats)) / repeats
        out[f"swd/{band_r.shape[-1]}"] = 1e3 * value
    out["swd"] = sum(out.values()) / len(out)
    return out
