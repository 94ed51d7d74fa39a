"""Exponential moving average of G's weights, G_ema (Karras et al. 2018, "Progressive
Growing of GANs"; Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN
Training"). G_ema is what gets evaluated and exported.

    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    ...after every G step:
    update_ema(G_ema, G, decay=0.999)
"""

from __future__ import annotations

import torch
from torch import nn


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel (``.module``) or torch.compile (``._orig_mod``)."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(module, attr, None)
        if isinstance(inner, nn.Module):
            return unwrap(inner)
    return module


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    """In place: ``p_ema <- decay * p_ema + (1 - decay) * p`` for every parameter; buffers copied.

    Buffers (BatchNorm running statistics, spectral-norm vectors) are copied rather
    than averaged: they are statistics of the current G, not weights. Parameters
    are matched by name, so G may be wrapped by DDP or torch.compile; a missing or
    extra name raises ValueError instead of silently averaging the wrong tensors.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay = {decay} is invalid: must be in [0, 1]")
    G_ema, G = unwrap(G_ema), unwrap(G)
    _lerp_all(dict(G_ema.named_parameters()), dict(G.named_parameters()), decay)
    ema_buffers, buffers = dict(G_ema.named_buffers()), dict(G.named_buffers())
    _check_same_names(ema_buffers, buffers, "buffers")
    for name, buf in buffers.items():
        ema_buffers[name].copy_(buf)


def _lerp_all(ema: dict[str, torch.Tensor], current: dict[str, torch.Tensor], decay: float) -> None:
    _check_same_names(ema, current, "parameters")
    for name, p in current.items():
        ema[name].mul_(decay).add_(p.detach().to(ema[name].dtype), alpha=1.0 - decay)


def _check_same_names(ema: dict[str, torch.Tensor], current: dict[str, torch.Tensor], what: str) -> None:
    if ema.keys() != current.keys():
        diff = sorted(ema.keys() ^ current.keys())
        raise ValueError(f"G_ema and G differ in {what}: {', '.join(diff[:5])}")
