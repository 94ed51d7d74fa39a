"""The fully connected GAN (Goodfellow et al. 2014, "Generative Adversarial Nets").

G: ``z -> [Linear -> ReLU] x depth -> Linear -> tanh``, reshaped to ``out_shape``.
D: ``x -> [Linear -> LeakyReLU(0.2)] x depth -> logit``. The paper's D used maxout
units with dropout; LeakyReLU is the common modern replacement and keeps D
deterministic. Weights are Glorot-uniform (Glorot & Bengio 2010), biases zero: the
paper's MNIST configuration draws G's weights from U(-0.05, 0.05) for 1200-unit layers,
which is about variance-preserving at that width; Glorot's scale keeps that property
at any width.

``out_shape`` is any shape: ``(C, H, W)`` for images, ``(2,)`` for points in the plane.
Conditioning follows Mirza & Osindero 2014: G reads ``[z, one_hot(y)]``; D uses the
projection head (Miyato & Koyama 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan.models.layers import Discriminator, Generator, apply_spectral_norm, init_weights


class MLPGenerator(Generator):
    """Fully connected G: ``forward(z [N, z_dim], y [N] | None) -> [N, *out_shape]`` in [-1, 1].

    Hidden layers have ``width * 2**i`` units for ``i < depth`` (growing towards the output).
    """

    def __init__(
        self,
        z_dim: int,
        out_shape: Sequence[int],
        width: int = 64,
        depth: int = 3,
        num_classes: int = 0,
        c_categorical: int = 0,
        c_continuous: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self._setup_latent(z_dim, num_classes, c_categorical, c_continuous)
        if depth < 1 or width < 1 or not out_shape or min(out_shape) < 1:
            raise ValueError("MLPGenerator needs depth >= 1, width >= 1 and a non-empty positive out_shape")
        self.out_shape = tuple(int(s) for s in out_shape)
        layers: list[nn.Module] = []
        fan_in = z_dim + num_classes  # Mirza & Osindero: the one-hot label joins z
        for i in range(depth):
            layers += [nn.Linear(fan_in, width * 2**i), nn.ReLU()]
            fan_in = width * 2**i
        layers += [nn.Linear(fan_in, math.prod(self.out_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self, nn.init.xavier_uniform_)
        apply_spectral_norm(self, spectral_norm)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h, y = self._inputs(z, y)  # [N, z_dim], [N] | None
        if y is not None:
            h = torch.cat([h, F.one_hot(y, self.num_classes).to(h.dtype)], dim=1)  # [N, z_dim + K]
        return self.net(h).view(z.shape[0], *self.out_shape)  # [N, *out_shape]


class MLPDiscriminator(Discriminator):
    """Fully connected D: ``forward(x [N, *in_shape], y [N] | None) -> logits [N]``.

    Hidden layers have ``width * 2**(depth-1-i)`` units (shrinking towards the logit).
    With ``q_categorical``/``q_continuous`` it owns InfoGAN's Q head and
    ``forward(x, y, return_q=True)`` returns ``(logits [N], q [N, cat + cont])``.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        width: int = 64,
        depth: int = 3,
        num_classes: int = 0,
        q_categorical: int = 0,
        q_continuous: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1 or not in_shape or min(in_shape) < 1:
            raise ValueError("MLPDiscriminator needs depth >= 1, width >= 1 and a non-empty positive in_shape")
        self.in_shape = tuple(int(s) for s in in_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(self.in_shape)
        for i in reversed(range(depth)):
            layers += [nn.Linear(fan_in, width * 2**i), nn.LeakyReLU(0.2)]
            fan_in = width * 2**i
        self.features = nn.Sequential(*layers)
        self._build_heads(fan_in, num_classes, q_categorical, q_continuous)
        init_weights(self, nn.init.xavier_uniform_)
        apply_spectral_norm(self, spectral_norm)
