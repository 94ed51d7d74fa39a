"""Building blocks shared by the architectures.

- :func:`apply_spectral_norm` wraps layers in spectral normalisation (Miyato et al. 2018)
  after :func:`init_weights` has initialised them as each paper prescribes.
- :class:`ConditionalBatchNorm2d` gives each class its own BatchNorm gain and bias
  (de Vries et al. 2017; used for class-conditional G by Miyato & Koyama 2018).
- :class:`ProjectionHead` is the projection discriminator's output layer
  (Miyato & Koyama 2018): ``logit = w . phi(x) + b + embed(y) . phi(x)``.
- :class:`QHead` is InfoGAN's auxiliary network Q (Chen et al. 2016) on D's features.
- :func:`halving_widths` maps a base width to per-resolution channel counts.
- :func:`check_resolution` and :func:`num_doublings` validate power-of-two sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gan.models.infogan import check_codes, check_latent, encode_latent

SN_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)


def apply_spectral_norm(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Spectral-normalise (Miyato et al. 2018) every Linear, Conv and Embedding in ``module``.

    Call it after the weights are initialised: the power iteration is primed on the
    final weights. Sub-modules with ``spectral_norm_exempt = True`` (class gains of
    conditional BatchNorm, InfoGAN's Q head) are left alone. The parametrization keeps
    the raw weight as a parameter and ``u``/``v`` as buffers: the state dict holds
    tensors only. Returns ``module`` for chaining.
    """
    if not enabled:
        return module
    for child_name, child in module.named_children():
        if getattr(child, "spectral_norm_exempt", False):
            continue
        if isinstance(child, SN_TYPES) and not parametrize.is_parametrized(child, "weight"):
            setattr(module, child_name, spectral_norm(child))
        else:
            apply_spectral_norm(child, True)
    return module


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The trainable weight of ``module`` (the original one under spectral normalisation)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def init_weights(module: nn.Module, weight_init: Callable[[torch.Tensor], object], bn_gain_std: float | None = None) -> None:
    """Apply ``weight_init`` to every Linear/Conv weight in ``module`` and zero their biases.

    With ``bn_gain_std``, BatchNorm gains are drawn from N(1, bn_gain_std) (DCGAN).
    Sub-modules with ``own_init = True`` (projection embedding, conditional BatchNorm)
    keep the initialisation they chose.
    """
    for m in _modules_with_own_init_skipped(module):
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            weight_init(raw_weight(m))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine and bn_gain_std is not None:
            nn.init.normal_(m.weight, 1.0, bn_gain_std)
            nn.init.zeros_(m.bias)


def _modules_with_own_init_skipped(module: nn.Module) -> list[nn.Module]:
    if getattr(module, "own_init", False):
        return []
    found = [module]
    for child in module.children():
        found += _modules_with_own_init_skipped(child)
    return found


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


def halving_widths(width: int, resolutions: list[int], floor: int = 8) -> list[int]:
    """Channels per resolution: ``width`` at 4x4, halving per doubling, at least ``floor``.

    Radford et al. 2015 (Fig. 1) describe G by its 4x4 width: 1024 -> 512 -> 256 -> 128
    from 4x4 to 32x32; BigGAN (Brock et al. 2019) halves its residual widths the same
    way (ch x 16 at 4x4 down to ch x 1 at 128x128). Both conv architectures use it, so
    ``g_width``/``d_width`` mean the same thing for each. At 16x16 with width 64 this
    gives 64 at 4x4, 32 at 8x8 and 16 at 16x16, which keeps CPU training fast; raise
    the width for larger images.
    """
    return [max(width * 4 // r, min(floor, width)) for r in resolutions]


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (de Vries et al. 2017).

    ``forward(x [N, C, H, W], y [N]) -> [N, C, H, W]``. Gains start at 1 and biases at 0,
    so an untrained conditional G behaves like its unconditional counterpart.
    """

    spectral_norm_exempt = True  # the gains are not a linear map to normalise
    own_init = True

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

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
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
    Both weights start Glorot-uniform as in the paper's code; with spectral
    normalisation the embedding is normalised too (:func:`apply_spectral_norm`).
    """

    own_init = True

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes > 0 else None
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)

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
    Q is not spectral-normalised: it is trained on the mutual-information loss, not
    as a critic, and keeps PyTorch's default initialisation.
    """

    spectral_norm_exempt = True
    own_init = True

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


class Discriminator(nn.Module):
    """Common output of every D: ``forward(x, y | None, return_q=False)``.

    Subclasses set ``self.features`` (a callable ``x -> phi [N, F]``) and call
    :meth:`_build_heads`. The logit comes from the projection head; with InfoGAN codes
    ``return_q=True`` also returns ``q [N, categorical + continuous]`` from Q on the
    same features (Chen et al. 2016 share all layers but the last between D and Q).
    """

    num_classes: int
    head: ProjectionHead
    q_head: QHead | None

    def _build_heads(self, features: int, num_classes: int, q_categorical: int, q_continuous: int) -> None:
        if q_categorical < 0 or q_continuous < 0 or q_categorical == 1:
            raise ValueError("InfoGAN Q head sizes must be >= 0 and a categorical code needs >= 2 categories")
        self.num_classes = num_classes
        self.q_categorical, self.q_continuous = q_categorical, q_continuous
        self.head = ProjectionHead(features, num_classes)
        # Q exists only with InfoGAN codes: an unused head would get no gradient under DDP.
        self.q_head = QHead(features, q_categorical, q_continuous) if q_categorical + q_continuous else None

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, return_q: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        phi = self.features(x)  # [N, F]
        logits = self.head(phi, check_labels(y, self.num_classes, "discriminator"))  # [N]
        if not return_q:
            return logits
        if self.q_head is None:
            raise ValueError("this discriminator has no InfoGAN Q head (infogan codes are off)")
        return logits, self.q_head(phi)


class Generator(nn.Module):
    """Common latent handling of every G: the attributes of the contract and input checks.

    ``z_dim`` is the whole latent size, InfoGAN codes included (the last
    ``c_dim = c_categorical + c_continuous`` entries); ``num_classes`` 0 = unconditional.
    """

    def _setup_latent(self, z_dim: int, num_classes: int, c_categorical: int, c_continuous: int) -> None:
        check_codes(z_dim, c_categorical, c_continuous)
        if num_classes < 0:
            raise ValueError(f"num_classes = {num_classes} is invalid: must be >= 0 (0 = unconditional)")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.c_categorical, self.c_continuous = c_categorical, c_continuous
        self.c_dim = c_categorical + c_continuous

    def _inputs(self, z: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Checked ``(z [N, z_dim] with one-hot categorical code, y [N] long | None)``."""
        check_latent(z, self.z_dim)
        y = check_labels(y, self.num_classes, "generator")
        if y is not None and y.shape != (z.shape[0],):
            raise ValueError(f"labels y must have shape [{z.shape[0]}], got {list(y.shape)}")
        return encode_latent(z, self.c_categorical, self.c_continuous), y
