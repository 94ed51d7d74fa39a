"""Residual G and D of SNGAN (Miyato et al. 2018, "Spectral Normalization for Generative
Adversarial Networks"), the design BigGAN (Brock et al. 2019) scales up.

G: ``z -> Linear -> [N, w, 4, 4] -> GBlock (x2 up) ... -> BN -> ReLU -> Conv 3x3 -> tanh``
D: ``x -> OptimizedBlock (x1/2) -> DBlock (x1/2) ... -> ReLU -> global sum pool -> logit``

A GBlock is ``BN -> ReLU -> up -> Conv 3x3 -> BN -> ReLU -> Conv 3x3`` plus an
upsampled 1x1-conv shortcut; a DBlock is ``ReLU -> Conv 3x3 -> ReLU -> Conv 3x3 ->
avgpool`` plus a 1x1-conv + avgpool shortcut. D has no BatchNorm; spectral
normalisation is on by default in D (the paper's point). Weights are Glorot-uniform
with gain sqrt(2) on the residual convolutions and 1 elsewhere, as in the authors' code.

Conditioning: conditional BatchNorm in G's blocks, projection head in D (Miyato &
Koyama 2018, "cGANs with Projection Discriminator").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gan.models.layers import (
    Discriminator,
    Generator,
    apply_spectral_norm,
    batch_norm,
    check_channels,
    check_resolution,
    halving_widths,
    init_weights,
    num_doublings,
)

RESIDUAL_GAIN = math.sqrt(2.0)


def _glorot(gain: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda w: nn.init.xavier_uniform_(w, gain)


class GBlock(nn.Module):
    """Upsampling residual block: ``forward(x [N, c_in, r, r], y) -> [N, c_out, 2r, 2r]``."""

    own_init = True

    def __init__(self, c_in: int, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.norm1 = batch_norm(c_in, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = batch_norm(c_out, num_classes)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        init_weights(self, _glorot(RESIDUAL_GAIN))
        init_weights(self.shortcut, _glorot(1.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(torch.relu(self.norm1(x, y)), scale_factor=2.0, mode="nearest")  # [N, c_in, 2r, 2r]
        h = self.conv2(torch.relu(self.norm2(self.conv1(h), y)))  # [N, c_out, 2r, 2r]
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DBlock(nn.Module):
    """Downsampling residual block: ``[N, c_in, r, r] -> [N, c_out, r/2, r/2]``.

    ``first=True`` is the paper's "optimized" input block: no ReLU before the first
    convolution (it would clip the image) and the shortcut pools before its 1x1 conv.
    """

    own_init = True

    def __init__(self, c_in: int, c_out: int, first: bool = False) -> None:
        super().__init__()
        self.first = first
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        init_weights(self, _glorot(RESIDUAL_GAIN))
        init_weights(self.shortcut, _glorot(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else torch.relu(x)
        h = F.avg_pool2d(self.conv2(torch.relu(self.conv1(h))), 2)  # [N, c_out, r/2, r/2]
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        return h + F.avg_pool2d(self.shortcut(x), 2)


class ResNetGenerator(Generator):
    """SNGAN residual G: ``forward(z [N, z_dim], y [N] | None) -> [N, channels, S, S]`` in [-1, 1].

    One GBlock per doubling from 4x4 to S x S; ``width`` channels at 4x4, halving per
    doubling (:func:`halving_widths`; at S=16, width=64: 64, 32, 16).
    """

    def __init__(
        self,
        z_dim: int,
        channels: int,
        image_size: int,
        width: int = 64,
        num_classes: int = 0,
        c_categorical: int = 0,
        c_continuous: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        self._setup_latent(z_dim, num_classes, c_categorical, c_continuous)
        self.channels, self.image_size = channels, image_size
        resolutions = [4 * 2**i for i in range(num_doublings(image_size) + 1)]  # 4 .. S
        widths = halving_widths(width, resolutions)
        self.w0 = widths[0]
        self.project = nn.Linear(z_dim, widths[0] * 16)
        self.blocks = nn.ModuleList(
            GBlock(w_in, w_out, num_classes) for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        # The output BatchNorm is unconditional, as in the authors' code.
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.to_image = nn.Conv2d(widths[-1], channels, 3, padding=1)
        init_weights(self, _glorot(1.0))
        apply_spectral_norm(self, spectral_norm)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z, y = self._inputs(z, y)  # [N, z_dim], [N] | None
        h = self.project(z).view(z.shape[0], self.w0, 4, 4)  # [N, w0, 4, 4]
        for block in self.blocks:
            h = block(h, y)  # [N, w_r, r, r], r doubling
        return torch.tanh(self.to_image(torch.relu(self.out_norm(h))))  # [N, C, S, S]


class ResNetDiscriminator(Discriminator):
    """SNGAN residual D: ``forward(x [N, channels, S, S], y [N] | None) -> logits [N]``.

    One DBlock per halving from S x S to 4x4 (``width`` channels at 4x4, half as many per
    doubling), then ReLU and a global sum pool into ``phi [N, width]``, which feeds the logit, the projection and InfoGAN's Q head.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        width: int = 64,
        num_classes: int = 0,
        q_categorical: int = 0,
        q_continuous: int = 0,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        self.channels, self.image_size = channels, image_size
        resolutions = [image_size // 2**i for i in range(1, num_doublings(image_size) + 1)]  # S/2 .. 4
        widths = halving_widths(width, resolutions)
        c_ins = [channels, *widths[:-1]]
        self.blocks = nn.Sequential(
            *(DBlock(c_in, c_out, first=i == 0) for i, (c_in, c_out) in enumerate(zip(c_ins, widths, strict=True)))
        )
        self._build_heads(widths[-1], num_classes, q_categorical, q_continuous)
        apply_spectral_norm(self, spectral_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi [N, w_4]``: the sum over positions of the last ReLU'd feature maps."""
        return torch.relu(self.blocks(x)).sum(dim=(2, 3))
