"""DCGAN (Radford et al. 2015, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks").

G: ``z -> Linear -> [N, w0, 4, 4] -> BN -> ReLU -> [ConvT 4x4 s2 -> BN -> ReLU] ... -> ConvT -> tanh``
   (``upsample="resize"``: each ConvT 4x4 s2 is a nearest-neighbour 2x resize and a Conv 3x3)
D: ``x -> Conv 4x4 s2 -> LReLU(0.2) -> [Conv 4x4 s2 -> BN -> LReLU(0.2)] ... -> flatten -> logit``

As the paper prescribes: no pooling, no BatchNorm on G's output or D's input layer,
ReLU in G and LeakyReLU(0.2) in D, weights from N(0, 0.02), BatchNorm gains from
N(1, 0.02). ``width`` is the channel count at 4x4, halving as the resolution doubles
(:func:`halving_widths`; the paper's 64x64 G has width 1024).

Up-sampling: a stride-2 transposed convolution with a 4x4 kernel overlaps its outputs
unevenly unless its weights stay balanced, which leaves checkerboard artefacts (Odena et
al. 2016, "Deconvolution and Checkerboard Artifacts"); on RGB photographs they showed in
the samples. ``upsample="resize"`` (the ``generate`` recipe's default, ``model.g_upsample``)
resizes and then convolves, as that paper recommends; ``"transposed"`` is the paper's
DCGAN and what an export without the key was trained with.

Conditioning: G uses conditional BatchNorm (de Vries et al. 2017), D the projection
head (Miyato & Koyama 2018). With spectral normalisation D drops its BatchNorm, as in
the "standard CNN" of Miyato et al. 2018: SN already controls D's Lipschitz constant,
and per-sample logits keep the gradient penalty exact.
"""

from __future__ import annotations

import math

import torch
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

INIT_STD = 0.02


def _dcgan_init(w: torch.Tensor) -> None:
    nn.init.normal_(w, 0.0, INIT_STD)


UPSAMPLE = ("transposed", "resize")


def _upsampling(c_in: int, c_out: int, mode: str, bias: bool) -> nn.Module:
    """A 2x up-sampling layer ``[N, c_in, r, r] -> [N, c_out, 2r, 2r]``: ConvT 4x4 s2, or resize + Conv 3x3."""
    if mode == "transposed":
        return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))


class DCGANGenerator(Generator):
    """DCGAN G: ``forward(z [N, z_dim], y [N] | None) -> [N, channels, S, S]`` in [-1, 1].

    Feature maps ``[N, w_r, r, r]`` for r = 4, 8, ..., S/2 with ``w_r`` from
    :func:`halving_widths` (at S=16, width=64: 64 at 4x4, 32 at 8x8).
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
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        if upsample not in UPSAMPLE:
            raise ValueError(f"upsample = {upsample!r} is invalid; use one of {', '.join(UPSAMPLE)}")
        self._setup_latent(z_dim, num_classes, c_categorical, c_continuous)
        self.channels, self.image_size = channels, image_size
        resolutions = [4 * 2**i for i in range(num_doublings(image_size))]  # 4 .. S/2
        widths = halving_widths(width, resolutions)
        self.w0 = widths[0]
        # The paper's first layer is a matrix multiplication reshaped to 4x4 feature maps;
        # no bias because BatchNorm follows.
        self.project = nn.Linear(z_dim, widths[0] * 16, bias=False)
        self.norms = nn.ModuleList([batch_norm(w, num_classes) for w in widths])
        self.ups = nn.ModuleList(
            _upsampling(w_in, w_out, upsample, bias=False) for w_in, w_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.to_image = _upsampling(widths[-1], channels, upsample, bias=True)
        init_weights(self, _dcgan_init, bn_gain_std=INIT_STD)
        apply_spectral_norm(self, spectral_norm)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z, y = self._inputs(z, y)  # [N, z_dim], [N] | None
        h = self.project(z).view(z.shape[0], self.w0, 4, 4)  # [N, w0, 4, 4]
        h = torch.relu(self.norms[0](h, y))
        for up, norm in zip(self.ups, self.norms[1:], strict=True):
            h = torch.relu(norm(up(h), y))  # [N, w_r, r, r], r doubling
        return torch.tanh(self.to_image(h))  # [N, C, S, S]


class DCGANDiscriminator(Discriminator):
    """DCGAN D: ``forward(x [N, channels, S, S], y [N] | None) -> logits [N]``.

    Feature maps ``[N, w_r, r, r]`` for r = S/2, ..., 4; the 4x4 maps are flattened
    into ``phi [N, 16 w_4]`` for the logit, the projection and InfoGAN's Q head.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        width: int = 64,
        num_classes: int = 0,
        q_categorical: int = 0,
        q_continuous: int = 0,
        spectral_norm: bool = False,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_resolution(image_size)
        check_channels(channels)
        if norm not in ("batch", "group"):
            raise ValueError(f"DCGAN D norm must be 'batch' or 'group', not {norm!r}")
        self.channels, self.image_size = channels, image_size
        resolutions = [image_size // 2**i for i in range(1, num_doublings(image_size) + 1)]  # S/2 .. 4
        widths = halving_widths(width, resolutions)
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers.append(nn.Conv2d(w_in, w_out, 4, stride=2, padding=1, bias=spectral_norm))
            if not spectral_norm:
                # GroupNorm under DP-SGD: BatchNorm mixes the samples of a batch, so per-sample
                # gradients (and their clipping) would not bound one image's influence
                layers.append(nn.BatchNorm2d(w_out) if norm == "batch" else nn.GroupNorm(math.gcd(8, w_out), w_out))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Flatten())  # [N, 16 w_4]
        self.features = nn.Sequential(*layers)
        features = widths[-1] * 16
        self._build_heads(features, num_classes, q_categorical, q_continuous)
        init_weights(self, _dcgan_init, bn_gain_std=INIT_STD)
        apply_spectral_norm(self, spectral_norm)
