"""Layers with the equalised learning rate (Karras et al. 2018, "Progressive Growing of GANs",
Sec. 4.1) and the minibatch standard deviation, shared by ProGAN and StyleGAN2.

Every weight is stored ~ N(0, 1/lr_mul^2) and scaled by ``lr_mul / sqrt(fan_in)`` at run
time (He's constant applied per forward instead of at initialisation), so Adam's
per-parameter step sizes are the same for every layer whatever its fan-in.

    conv = EqualizedConv2d(64, 32, 3)                 # 3x3 conv + leaky ReLU (x sqrt 2)
    fc = EqualizedLinear(128, 64, activation=True)
    h = minibatch_stddev(h, group_size=4)             # [N, C, H, W] -> [N, C + 1, H, W]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# keeps the variance of a leaky-ReLU layer's output at that of its input
LRELU_GAIN = math.sqrt(2.0)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x / sqrt(mean(x^2))`` over dim 1: the pixel-wise feature normalisation (ProGAN), and of z and the class embedding."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalised lr: ``y = act(x @ (w * lr_mul / sqrt(in)).T + b * lr_mul)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul, self.activation = lr_mul, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation else x


class EqualizedConv2d(nn.Module):
    """Conv with equalised lr, optional x1/2 average-pool downsampling after it and leaky ReLU."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        bias: bool = True,
        activation: bool = True,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(c_in * kernel * kernel)
        self.padding, self.activation, self.down = kernel // 2, activation, down

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.down:
            x = F.avg_pool2d(x, 2)
        if self.activation:
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x * gain if gain != 1.0 else x


def class_projection(h: torch.Tensor, y: torch.Tensor | None, embed: nn.Module | None, num_classes: int) -> torch.Tensor:
    """D's logit from its features ``h [N, cmap_dim]``: ``<h, embed(one_hot(y))> / sqrt(cmap_dim)``
    when class-conditional (the reference's ``cmap``), else ``h [N, 1]`` squeezed."""
    if embed is None:
        return h.squeeze(1)
    cmap = embed(F.one_hot(y, num_classes).to(h.dtype))  # [N, cmap_dim]
    return (h * cmap).sum(dim=1) / math.sqrt(h.shape[1])


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the mean over features of the stddev over each group of samples (Karras et al. 2018).

    ``[N, C, H, W] -> [N, C + 1, H, W]``; the group is the largest divisor of N not above ``group_size``.
    """
    N, C, H, W = x.shape
    G = max(g for g in range(1, min(group_size, N) + 1) if N % g == 0)
    y = x.reshape(G, N // G, C, H, W)  # sample n joins group n % (N // G), as in the reference
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # [N/G, C, H, W]
    y = y.mean(dim=[1, 2, 3])  # [N/G]
    y = y.reshape(-1, 1, 1, 1).repeat(G, 1, H, W)  # [N, 1, H, W]
    return torch.cat([x, y], dim=1)
