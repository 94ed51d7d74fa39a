"""Networks of the ``detect`` task: GANomaly (Akçay et al. 2018) and f-AnoGAN (Schlegl et al. 2019).

    G = GanomalyGenerator(channels=1, image_size=16, width=32, z_dim=100)
    x_hat, z, z_hat = G(x)                  # [N, C, S, S], [N, z_dim], [N, z_dim]
    D = GanomalyDiscriminator(channels=1, image_size=16, width=32)
    logits, features = D(x)                 # [N], [N, F]

    G, D, E = FAnoGANGenerator(...), FAnoGANCritic(...), FAnoGANEncoder(...)
    x = G(z); value, features = D(x); z_hat = E(x)

All are DCGAN-style stacks (Radford et al. 2015): an encoder halves the resolution
with 4x4 stride-2 convolutions down to 4x4 and maps that to a vector with a 4x4
convolution; a decoder mirrors it with transposed convolutions and ends in tanh.
``width`` is the channel count at 4x4 (halving as the resolution doubles, at least 8:
:func:`gan.models.layers.halving_widths`). Weights from N(0, 0.02), BatchNorm gains from
N(1, 0.02), as both references initialise them (``weights_init``).

f-AnoGAN's critic has no BatchNorm: WGAN-GP's penalty is per sample (Gulrajani et al.
2017 use layer normalisation or none); its features are the last hidden layer, as
izi_f compares them (Schlegl et al. 2019, Eq. 6).
"""

from __future__ import annotations

import torch
from torch import nn

from gan.models.layers import (
    check_channels,
    check_resolution,
    halving_widths,
    init_weights,
    num_doublings,
)

INIT_STD = 0.02


def dcgan_init(module: nn.Module) -> None:
    """Both references' ``weights_init``: conv weights from N(0, 0.02), BatchNorm gains from N(1, 0.02)."""
    init_weights(module, lambda w: nn.init.normal_(w, 0.0, INIT_STD), bn_gain_std=INIT_STD)


def _resolutions(image_size: int) -> list[int]:
    """Feature-map sizes from S/2 down to 4 (the encoder's order)."""
    return [image_size // 2**k for k in range(1, num_doublings(image_size) + 1)]


def conv_encoder(channels: int, image_size: int, width: int, out_dim: int, batch_norm: bool = True) -> tuple[nn.Sequential, nn.Conv2d]:
    """``(features, head)``: ``x [N, C, S, S] -> [N, w4, 4, 4]`` and the 4x4 convolution to ``[N, out_dim, 1, 1]``."""
    check_channels(channels)
    check_resolution(image_size)
    sizes = _resolutions(image_size)  # S/2, ..., 4
    widths = list(reversed(halving_widths(width, list(reversed(sizes)))))  # widths at S/2, ..., 4
    layers: list[nn.Module] = []
    c_in = channels
    for i, c_out in enumerate(widths):
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
        if i > 0 and batch_norm:  # DCGAN: no BatchNorm on the input layer
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in = c_out
    return nn.Sequential(*layers), nn.Conv2d(c_in, out_dim, 4, 1, 0, bias=False)


def conv_decoder(channels: int, image_size: int, width: int, z_dim: int) -> nn.Sequential:
    """``z [N, z_dim, 1, 1] -> [N, C, S, S]`` in [-1, 1] (transposed convolutions, BatchNorm, ReLU, tanh)."""
    check_channels(channels)
    check_resolution(image_size)
    sizes = list(reversed(_resolutions(image_size)))  # 4, ..., S/2
    widths = halving_widths(width, sizes)
    layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
    for c_in, c_out in zip(widths, widths[1:], strict=False):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """``x [N, C, S, S] -> z [N, z_dim]``: GANomaly's E1/E2 and f-AnoGAN's izi_f encoder E."""

    def __init__(self, channels: int, image_size: int, width: int = 32, z_dim: int = 100, batch_norm: bool = True) -> None:
        super().__init__()
        self.z_dim, self.channels, self.image_size = int(z_dim), int(channels), int(image_size)
        self.features, self.head = conv_encoder(channels, image_size, width, z_dim, batch_norm)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten(1)  # [N, z_dim]


class GanomalyGenerator(nn.Module):
    """GANomaly's G: encoder E1, decoder G_D, encoder E2 (Akçay et al. 2018, Fig. 2).

    ``forward(x) -> (x_hat, z, z_hat)``: ``z = E1(x)``, ``x_hat = G_D(z)``, ``z_hat = E2(x_hat)``.
    The anomaly score of an image is ``||z - z_hat||^2`` (mean over the latent).
    """

    def __init__(self, channels: int, image_size: int, width: int = 32, z_dim: int = 100) -> None:
        super().__init__()
        self.z_dim, self.channels, self.image_size = int(z_dim), int(channels), int(image_size)
        self.encoder1 = Encoder(channels, image_size, width, z_dim)
        self.decoder = conv_decoder(channels, image_size, width, z_dim)
        self.encoder2 = Encoder(channels, image_size, width, z_dim)
        dcgan_init(self.decoder)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder1(x)  # [N, z_dim]
        x_hat = self.decoder(z[:, :, None, None])  # [N, C, S, S]
        z_hat = self.encoder2(x_hat)  # [N, z_dim]
        return x_hat, z, z_hat


class GanomalyDiscriminator(nn.Module):
    """GANomaly's D: the encoder's features, then a 4x4 convolution to one logit.

    ``forward(x) -> (logits [N], features [N, F])``; features feed w_adv's feature matching.
    """

    def __init__(self, channels: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        self.channels, self.image_size = int(channels), int(image_size)
        self.features, self.head = conv_encoder(channels, image_size, width, 1)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)  # [N, w4, 4, 4]
        return self.head(h).flatten(), h.flatten(1)


class FAnoGANGenerator(nn.Module):
    """f-AnoGAN's G (a WGAN-GP generator): ``z [N, z_dim] -> [N, C, S, S]`` in [-1, 1]."""

    def __init__(self, channels: int, image_size: int, width: int = 32, z_dim: int = 100) -> None:
        super().__init__()
        self.z_dim, self.channels, self.image_size = int(z_dim), int(channels), int(image_size)
        self.decoder = conv_decoder(channels, image_size, width, z_dim)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z[:, :, None, None])


class FAnoGANCritic(nn.Module):
    """f-AnoGAN's critic (no BatchNorm): ``forward(x) -> (values [N], features [N, F])``."""

    def __init__(self, channels: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        self.channels, self.image_size = int(channels), int(image_size)
        self.features, self.head = conv_encoder(channels, image_size, width, 1, batch_norm=False)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)  # [N, w4, 4, 4]
        return self.head(h).flatten(), h.flatten(1)


class FAnoGANEncoder(Encoder):
    """f-AnoGAN's izi_f encoder: ``x -> z_hat [N, z_dim]`` (no BatchNorm, so a score never depends on the batch)."""

    def __init__(self, channels: int, image_size: int, width: int = 32, z_dim: int = 100) -> None:
        super().__init__(channels, image_size, width, z_dim, batch_norm=False)
