"""Building blocks shared by the architectures.

- :func:`sn` wraps a layer in spectral normalisation (Miyato et al. 2018) when asked.
- :class:`ConditionalBatchNorm2d` gives each class its own BatchNorm gain and bias
  (de Vries et al. 2017; used for class-conditional G by Miyato & Koyama 2018).
- :class:`ProjectionHead` is the projection discriminator's output layer
  (Miyato & Koyama 2018): ``logit = w . phi(x) + b + embed(y) . phi(x)``.
- :class:`QHead` is InfoGAN's auxiliary network Q (Chen et al. 2016) on D's features.
- :func:`stage_widths` maps a base width to per-resolution channel counts.
- :func:`check_resolution` and :func:`num_doublings` validate power-of-two sizes.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Return ``module`` with spectral normalisation on its weight when ``enabled``.

    The parametrization keeps the raw weight as a parameter and the power-iteration
    vectors ``u``/``v`` as buffers, so the state dict holds tensors only.
    """
    return spectral_norm(module) if enabled else module


def check_resolution(image_size: int, minimum: int = 8, maximum: int = 128) -> None:
    """Raise ValueError unless ``image_size`` is a power of two in [minimum, maximum]."""
    if image_size < minimum or image_size > maximum or image_size & (image_size - 1):
        raise ValueError(f"image_size = {image_size} is invalid: must be a power of two from {minimum} to {maximum}")


def check_channels(channels: int) -> None:
    """Raise ValueError unless ``channels`` is positive (1 = grayscale, 3 = RGB)."""
    if channels < 1:
        raise ValueError(f"channels = {channels} is invalid: must be at least 1")


def num_doublings(image_size: int, base: int = 4) -> int:
    """How many x2 up/downsamplings lie between ``base`` x ``base`` and ``image_size``."""
    return int(math.log2(image_size // base))


def stage_widths(width: int, image_size: int, resolutions: list[int], max_mult: int = 8) -> list[int]:
    """Channel count at each resolution: ``width * image_size / (2 r)``, clamped to [1, max_mult].

    Feature maps get fewer channels as they grow, as in DCGAN (Radford et al. 2015:
    1024 -> 512 -> 256 -> 128 from 4x4 to 32x32); at 16x16 with width 64 this gives
    128 channels at 4x4 and 64 at 8x8, which keeps CPU training fast.
    """
    widths = []
    for r in resolutions:
        mult = min(max(image_size // (2 * r), 1), max_mult)
        widths.append(width * mult)
    return widths


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (de Vries et al. 2017).

    ``forward(x [N, C, H, W], y [N]) -> [N, C, H, W]``. Gains start at 1 and biases at 0,
    so an untrained conditional G behaves like its unconditional counterpart.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)  # [N, C, H, W]
        gain = self.gain(y)[:, :, None, None]  # [N, C, 1, 1]
        bias = self.bias(y)[:, :, None, None]
        return h * gain + bias


class BatchNorm2d(nn.BatchNorm2d):
    """Plain BatchNorm that accepts (and ignores) a label, so blocks need no branches."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ARG002
        return super().forward(x)


def batch_norm(num_features: int, num_classes: int) -> nn.Module:
    """Conditional BatchNorm when ``num_classes > 0``, else a plain one; both take ``(x, y)``."""
    if num_classes > 0:
        return ConditionalBatchNorm2d(num_features, num_classes)
    return BatchNorm2d(num_features)


class ProjectionHead(nn.Module):
    """Output layer of D: a linear logit plus, when conditional, the class projection.

    Projection discriminator (Miyato & Koyama 2018): ``logit(x, y) = w . phi + b + e_y . phi``
    with ``phi = phi(x)`` D's feature vector and ``e_y`` a learned class embedding. It
    replaces concatenating a one-hot label and respects the form of the optimal D.
    """

    def __init__(self, features: int, num_classes: int, spectral: bool) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = sn(nn.Linear(features, 1), spectral)
        self.embed = sn(nn.Embedding(num_classes, features), spectral) if num_classes > 0 else None

    def forward(self, phi: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        logits = self.linear(phi).squeeze(1)  # [N]
        if self.embed is not None:
            if y is None:
                raise ValueError("this discriminator is class-conditional: pass labels y [N]")
            logits = logits + (self.embed(y) * phi).sum(dim=1)  # [N]
        return logits


class QHead(nn.Module):
    """InfoGAN's Q network on D's features (Chen et al. 2016): FC -> LeakyReLU -> FC.

    Returns ``q [N, categorical + continuous]``: the categorical code's logits first,
    then the continuous codes' means (a factored Gaussian with unit variance).
    """

    def __init__(self, features: int, categorical: int, continuous: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, categorical + continuous),
        )

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return self.net(phi)


def check_labels(y: torch.Tensor | None, num_classes: int, who: str) -> torch.Tensor | None:
    """Labels to use: ``y`` for a conditional network (required), None for an unconditional one.

    An unconditional network ignores labels so that the same training loop serves
    labelled data with ``conditional: false``.
    """
    if num_classes == 0:
        return None
    if y is None:
        raise ValueError(f"this {who} is class-conditional ({num_classes} classes): pass labels y [N]")
    return y.long()
