"""The two halves of a GAN step: one D step and one G step, as small functions.

    d_out = d_step(parts, real, y, step_index)   # D learns real vs fake
    g_out = g_step(parts, y)                     # G learns to fool D

Both return scalar tensors (no host sync), named as logged: ``loss/D``, ``loss/G``
(the adversarial terms),
``D(x)``, ``D(G(z))`` (mean sigmoid of D's logits), ``grad_norm/D``, ``grad_norm/G`` and,
when active, ``loss/gp``, ``loss/r1``, ``loss/mi``.

DDP notes (why the calls look as they do). ``parts.G``/``parts.D`` may be
DistributedDataParallel wrappers and ``parts.G_raw``/``parts.D_raw`` the modules inside:

- the D step runs D through its wrapper (its gradients are all-reduced) and G through
  the raw module under ``no_grad`` (fakes are constants for D);
- the G step runs G through its wrapper and D through the raw module with D's
  parameters frozen: D's gradients are neither computed nor all-reduced, so no
  parameter of a wrapped module is ever "unused" in the step that uses the wrapper;
- the D step calls D twice (real, fake) before one backward(); this is safe because the
  wrappers are built with ``forward_sync_buffers=False`` (see ``loop.DDP_KWARGS``): a buffer
  broadcast in the second forward would otherwise overwrite BatchNorm statistics that
  the first forward's graph still needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gan.losses import gradient_penalty, infogan_mi_loss, r1_penalty

Metrics = dict[str, torch.Tensor]


@dataclass
class GANParts:
    """Everything a step needs; built once by :class:`gan.training.loop.GANTrainer`."""

    G: nn.Module  # possibly DDP-wrapped
    D: nn.Module  # possibly DDP-wrapped
    G_raw: nn.Module
    D_raw: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    d_loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    g_loss_fn: Callable[[torch.Tensor], torch.Tensor]
    loss: str  # model.loss
    z_dim: int
    device: torch.device
    gp_weight: float = 0.0
    r1_gamma: float = 0.0
    r1_interval: int = 16
    diffaugment: str = ""
    info_categorical: int = 0
    info_continuous: int = 0
    info_weight: float = 0.0
    amp_dtype: torch.dtype | None = None  # torch.bfloat16 for mixed precision on GPU
    channels_last: bool = False

    @property
    def c_dim(self) -> int:
        return self.info_categorical + self.info_continuous

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def sample_z(parts: GANParts, n: int) -> torch.Tensor:
    """Latents ``[n, z_dim]`` ~ N(0, I); InfoGAN codes are the last ``c_dim`` entries."""
    return torch.randn(n, parts.z_dim, device=parts.device)


def augment(parts: GANParts, x: torch.Tensor) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020) on real and fake alike; identity when off."""
    if not parts.diffaugment:
        return x
    from gan.diffaugment import diff_augment

    return diff_augment(x, parts.diffaugment)


def d_step(parts: GANParts, real: torch.Tensor, y: torch.Tensor | None, d_step_index: int) -> Metrics:
    """One optimiser step of D on ``real [B, C, H, W]`` against fresh fakes."""
    B = real.shape[0]
    z = sample_z(parts, B)  # [B, z_dim]
    with torch.no_grad(), parts.autocast():
        fake = parts.G_raw(z, y)  # [B, C, H, W], a constant for D
    if parts.channels_last:
        fake = fake.contiguous(memory_format=torch.channels_last)
    lazy_r1 = parts.r1_gamma > 0 and d_step_index % parts.r1_interval == 0
    real_in = augment(parts, real).detach().requires_grad_(lazy_r1)
    fake_in = augment(parts, fake.float() if parts.amp_dtype else fake)
    out: Metrics = {}
    with parts.autocast():
        real_logits = parts.D(real_in, y)  # [B]
        if parts.c_dim:
            fake_logits, q = parts.D(fake_in, y, return_q=True)  # [B], [B, q_dim]
        else:
            fake_logits = parts.D(fake_in, y)  # [B]
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    loss = parts.d_loss_fn(real_logits, fake_logits)
    out["loss/D"] = loss.detach()  # the adversarial term; regularisers are logged on their own
    if parts.loss == "wgan-gp" and parts.gp_weight > 0:
        # the penalty's own forward runs through the wrapper too: its D gradients are all-reduced with the rest
        with parts.autocast():
            gp = gradient_penalty(parts.D, real_in.detach(), fake_in.detach(), y)
        loss = loss + parts.gp_weight * gp.float()
        out["loss/gp"] = gp.detach().float()
    if lazy_r1:
        # lazy regularisation (Karras et al. 2020): every r1_interval steps, weighted by the interval
        r1 = r1_penalty(real_logits, real_in)
        loss = loss + 0.5 * parts.r1_gamma * parts.r1_interval * r1
        out["loss/r1"] = r1.detach()
    if parts.c_dim:
        # Q (on D's features) learns to recover the codes G was given
        mi = infogan_mi_loss(q.float(), z[:, -parts.c_dim :], parts.info_categorical, parts.info_continuous)
        loss = loss + parts.info_weight * mi
    parts.opt_D.zero_grad(set_to_none=True)
    loss.backward()
    out["grad_norm/D"] = grad_norm(parts.D_raw)
    parts.opt_D.step()
    out["D(x)"] = torch.sigmoid(real_logits.detach()).mean()
    out["D(G(z))"] = torch.sigmoid(fake_logits.detach()).mean()
    return out


def g_step(parts: GANParts, y: torch.Tensor | None, batch_size: int) -> Metrics:
    """One optimiser step of G through a frozen D (labels ``y [B]`` or None)."""
    z = sample_z(parts, batch_size)  # [B, z_dim]
    parts.D_raw.requires_grad_(False)
    try:
        with parts.autocast():
            fake = parts.G(z, y)  # [B, C, H, W], through the DDP wrapper: G's gradients are all-reduced
            if parts.channels_last:
                fake = fake.contiguous(memory_format=torch.channels_last)
            if parts.c_dim:
                logits, q = parts.D_raw(augment(parts, fake), y, return_q=True)
            else:
                logits = parts.D_raw(augment(parts, fake), y)  # [B]
        loss = parts.g_loss_fn(logits.float())
        out: Metrics = {"loss/G": loss.detach()}  # adversarial term; loss/mi on its own
        if parts.c_dim:
            mi = infogan_mi_loss(q.float(), z[:, -parts.c_dim :], parts.info_categorical, parts.info_continuous)
            loss = loss + parts.info_weight * mi
            out["loss/mi"] = mi.detach()
        parts.opt_G.zero_grad(set_to_none=True)
        loss.backward()
    finally:
        parts.D_raw.requires_grad_(True)
    out["grad_norm/G"] = grad_norm(parts.G_raw)
    parts.opt_G.step()
    return out


@torch.no_grad()
def grad_norm(module: nn.Module) -> torch.Tensor:
    """The L2 norm over all of ``module``'s gradients (a scalar tensor, no host sync)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
