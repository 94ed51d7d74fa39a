"""Progressive GAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality,
Stability, and Variation"), scaled down by its arguments; reference:
tkarras/progressive_growing_of_gans, networks.py (G_paper, D_paper).

Every resolution's layers are built up front; two buffers, ``level`` (0 = 4x4, 1 = 8x8, ...)
and ``alpha`` (the fade-in of the newest level, 0 -> 1), choose how much of the network
runs. :meth:`ProGANGenerator.set_growth` moves them; the training schedule lives in
:mod:`gan.tasks.progan`. The buffers are part of ``state_dict``, so a checkpoint or an
export holds the level of detail it was trained to, and growing never changes the set of
parameters (DDP wraps the networks once).

G: ``z (+ class embedding), pixel-normalised -> dense 4x4 -> conv 3x3`` then per
resolution ``nearest x2 -> conv 3x3 -> conv 3x3``, pixel norm after every conv; toRGB
(1x1, linear) per resolution. While a level fades in, the output is
``lerp(upsample(toRGB_{l-1}(h_{l-1})), toRGB_l(h_l), alpha)``. The image is always
returned at ``image_size``, nearest-upsampled from the current level, so evaluation,
sampling and export see one shape whatever the level.
D: mirrors G: fromRGB (1x1) at the current level, per resolution ``conv 3x3 -> conv 3x3 ->
avg pool x1/2``, the fade-in blending with ``fromRGB_{l-1}(pool(x))``; at 4x4 minibatch
stddev, conv 3x3, dense, and a linear output, class-conditional through a projection on
a class embedding (the paper is unconditional; this keeps `gan augment`'s labels).

Equalised learning rate everywhere (:mod:`gan.models.equalized`); leaky ReLU 0.2.

    G = ProGANGenerator(z_dim=64, num_classes=10, channels=3, image_size=32)
    G.set_growth(1, 0.5)                     # 8x8, fading in from 4x4
    x = G(z, y)                              # [N, 3, 32, 32], blocky 8x8 content
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan.models.equalized import (
    EqualizedConv2d,
    EqualizedLinear,
    class_projection,
    minibatch_stddev,
    normalize_2nd_moment,
)
from gan.models.layers import check_channels, check_labels, check_resolution, halving_widths


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Pixel-wise feature vector normalisation (ProGAN Sec. 4.2): ``x / sqrt(mean_c(x^2) + 1e-8)``."""
    return normalize_2nd_moment(x)


def resolutions_of(image_size: int) -> list[int]:
    """``[4, 8, ..., image_size]``: one level of detail per resolution."""
    return [2**i for i in range(2, int(math.log2(image_size)) + 1)]


def upsample_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour upsampling of ``[N, C, r, r]`` to ``size`` (the paper's upscale2d)."""
    factor = size // x.shape[-1]
    return x if factor == 1 else x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def downsample_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Average pooling of ``[N, C, H, H]`` to ``size`` (the paper's downscale2d)."""
    factor = x.shape[-1] // size
    return x if factor == 1 else F.avg_pool2d(x, factor)


class _Growing(nn.Module):
    """The level-of-detail buffers both networks share, and the zero-weighted join of idle layers."""

    def _init_growth(self, levels: int) -> None:
        self.levels = levels
        # a freshly built network (an export being loaded) is fully grown until told otherwise
        self.register_buffer("level", torch.tensor(levels - 1, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(1.0))

    def set_growth(self, level: int, alpha: float) -> None:
        """Run levels ``0..level``, the newest one faded in by ``alpha`` in [0, 1]."""
        if not 0 <= level < self.levels or not 0.0 <= alpha <= 1.0:
            raise ValueError(
                f"growth (level {level}, alpha {alpha}) is invalid: level in 0..{self.levels - 1}, alpha in [0, 1]"
            )
        self.level.fill_(int(level))
        self.alpha.fill_(float(alpha))

    def growth(self) -> tuple[int, float]:
        """``(level, alpha)`` as plain numbers."""
        return int(self.level.item()), float(self.alpha.item())

    def _idle_join(self, out: torch.Tensor, rgb: nn.ModuleList, faded: bool) -> torch.Tensor:
        """``out + 0 * (sum of the idle layers' parameters)`` while training.

        DDP expects a gradient for every parameter it wraps; the blocks of levels not yet
        grown and the toRGB / fromRGB layers not in use get an exact zero instead of none,
        so the networks are wrapped once for the whole growth (stylegan2-ada joins unused
        parameters the same way). Parameter sums only: no activations are computed.
        """
        if not (self.training and torch.is_grad_enabled()):
            return out
        level = int(self.level)
        idle = [p for i, m in enumerate(self.blocks) if i > level for p in m.parameters()]
        idle += [
            p
            for i, m in enumerate(rgb)
            if i != level and not (faded and i == level - 1)
            for p in m.parameters()
        ]
        return out if not idle else out + 0.0 * sum(p.sum() for p in idle)


class ProGANGenerator(_Growing):
    """ProGAN's G: ``G(z [N, z_dim], y [N] | None) -> [N, channels, image_size, image_size]``.

    ``width`` is the channel count at 4x4, halving per doubling (at least 8).
    """

    def __init__(
        self,
        z_dim: int,
        num_classes: int = 0,
        channels: int = 1,
        image_size: int = 16,
        width: int = 64,
    ) -> None:
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        if z_dim < 1 or num_classes < 0:
            raise ValueError(
                f"z_dim = {z_dim}, num_classes = {num_classes}: need z_dim >= 1 and num_classes >= 0"
            )
        self.z_dim, self.num_classes, self.channels, self.image_size = (
            z_dim,
            num_classes,
            channels,
            image_size,
        )
        widths = halving_widths(width, resolutions_of(image_size))
        self.embed = EqualizedLinear(num_classes, z_dim) if num_classes else None
        latent = z_dim * 2 if num_classes else z_dim
        c0 = widths[0]
        self.dense = EqualizedLinear(
            latent, c0 * 16, activation=True
        )  # the paper's 4x4 "dense" conv
        blocks = [nn.ModuleList([EqualizedConv2d(c0, c0, 3)])]
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            blocks.append(
                nn.ModuleList([EqualizedConv2d(c_in, c_out, 3), EqualizedConv2d(c_out, c_out, 3)])
            )
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(
            EqualizedConv2d(c, channels, 1, activation=False) for c in widths
        )
        self._init_growth(len(widths))

    def _latent(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        y = check_labels(y, self.num_classes, "generator")
        x = pixel_norm(z)
        if self.embed is not None:
            assert y is not None  # check_labels raised otherwise
            if y.shape != (z.shape[0],):
                raise ValueError(f"labels y must have shape [{z.shape[0]}], got {list(y.shape)}")
            x = torch.cat(
                [x, pixel_norm(self.embed(F.one_hot(y, self.num_classes).to(z.dtype)))], dim=1
            )
        return x

    def _block(self, i: int, h: torch.Tensor) -> torch.Tensor:
        if i > 0:
            h = upsample_to(h, h.shape[-1] * 2)
        for conv in self.blocks[i]:
            h = pixel_norm(conv(h))
        return h

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        level, alpha = self.growth()
        h = pixel_norm(self.dense(self._latent(z, y)).view(z.shape[0], -1, 4, 4))  # [N, C0, 4, 4]
        prev = None
        for i in range(level + 1):
            if i == level and i > 0 and alpha < 1.0:
                prev = upsample_to(
                    self.to_rgb[i - 1](h), h.shape[-1] * 2
                )  # the previous level's image
            h = self._block(i, h)
        img = self.to_rgb[level](h)
        if prev is not None:
            img = torch.lerp(prev, img, alpha)  # alpha 0: exactly the previous level's output
        img = self._idle_join(img, self.to_rgb, faded=prev is not None)
        return upsample_to(img, self.image_size)


class ProGANDiscriminator(_Growing):
    """ProGAN's D: ``D(x [N, C, S, S], y [N] | None) -> logits [N]`` at the current level of detail.

    ``x`` may come at ``image_size`` or at any power-of-two size down to the current
    level's resolution: it is average-pooled to that resolution first.
    """

    def __init__(
        self,
        num_classes: int = 0,
        channels: int = 1,
        image_size: int = 16,
        width: int = 64,
        mbstd_group: int = 4,
    ) -> None:
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        self.num_classes, self.channels, self.image_size, self.mbstd_group = (
            num_classes,
            channels,
            image_size,
            mbstd_group,
        )
        self.resolutions = resolutions_of(image_size)
        widths = halving_widths(
            width, self.resolutions
        )  # widths[i]: channels at resolution 4 * 2^i
        self.from_rgb = nn.ModuleList(EqualizedConv2d(channels, c, 1) for c in widths)
        # blocks[i] (i >= 1): resolution 4 * 2^i -> half of it; blocks[0] is the 4x4 head
        blocks = [nn.ModuleList([EqualizedConv2d(widths[0] + 1, widths[0], 3)])]
        for c_out, c_in in zip(widths[:-1], widths[1:], strict=True):
            blocks.append(
                nn.ModuleList(
                    [EqualizedConv2d(c_in, c_in, 3), EqualizedConv2d(c_in, c_out, 3, down=True)]
                )
            )
        self.blocks = nn.ModuleList(blocks)
        c0 = widths[0]
        self.fc = EqualizedLinear(c0 * 16, c0, activation=True)
        self.cmap_dim = c0 if num_classes else 1
        self.out = EqualizedLinear(c0, self.cmap_dim)
        self.embed = EqualizedLinear(num_classes, self.cmap_dim) if num_classes else None
        self._init_growth(len(widths))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, return_q: bool = False
    ) -> torch.Tensor:
        if return_q:
            raise ValueError(
                "the progan discriminator has no InfoGAN Q head (infogan codes are off)"
            )
        level, alpha = self.growth()
        res = self.resolutions[level]
        size = x.shape[-1] if x.dim() == 4 else 0
        if (
            x.dim() != 4
            or x.shape[1] != self.channels
            or x.shape[2] != size
            or size < res
            or size > self.image_size
            or size % res
        ):
            raise ValueError(
                f"x must have shape [N, {self.channels}, S, S] with S a power of two from {res} to {self.image_size}, got {list(x.shape)}"
            )
        y = check_labels(y, self.num_classes, "discriminator")
        x = downsample_to(x, res)
        h = self.from_rgb[level](x)
        faded = level > 0 and alpha < 1.0
        for i in range(level, 0, -1):
            for conv in self.blocks[i]:
                h = conv(h)
            if i == level and faded:
                h = torch.lerp(self.from_rgb[level - 1](downsample_to(x, res // 2)), h, alpha)
        h = self.blocks[0][0](minibatch_stddev(h, self.mbstd_group))  # [N, c0, 4, 4]
        h = self.out(self.fc(h.flatten(1)))  # [N, cmap_dim]
        h = self._idle_join(h, self.from_rgb, faded)
        return class_projection(h, y, self.embed, self.num_classes)
