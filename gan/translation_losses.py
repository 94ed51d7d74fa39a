"""Image-to-image translation losses: small pure functions named after the papers' terms.

    loss = g_loss_least_squares_cyclegan(D_B(fake_B)) + lambda_cyc * cycle_consistency_loss(rec_A, real_A)

Adversarial terms on patch logits reuse :mod:`gan.losses` where the reference's formula
is the same (LSGAN's D loss with CycleGAN's x0.5, the minimax D loss and non-saturating
G loss that pix2pix's BCE amounts to, the Wasserstein critic); the others are here.
Every loss is a mean over all elements (patches, pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd


def g_loss_least_squares_cyclegan(fake_logits: torch.Tensor) -> torch.Tensor:
    """CycleGAN's LSGAN G loss (Zhu et al. 2017, Sec. 4; the reference's MSELoss to target 1, no 1/2).

    L_GAN(G) = E[(D(G(x)) - 1)^2]
    """
    return (fake_logits - 1.0).pow(2).mean()


def cycle_consistency_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """CycleGAN's cycle loss one way (Zhu et al. 2017, Eq. 2): E[||F(G(x)) - x||_1]."""
    return (reconstructed - real).abs().mean()


def identity_loss(same: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """CycleGAN's identity mapping loss (Zhu et al. 2017, Sec. 5.2; Taigman et al. 2017): E[||G(y) - y||_1]."""
    return (same - real).abs().mean()


def l1_reconstruction_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pix2pix's L1 term (Isola et al. 2017, Eq. 3): E[||y - G(x)||_1]; also StarGAN's L_rec (Eq. 4)."""
    return (fake - target).abs().mean()


def domain_classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """StarGAN's L_cls (Choi et al. 2018, Eq. 2-3): -log D_cls(c | x).

    ``target`` int64 ``[B]`` (single-label domains: cross-entropy over K) or float
    ``[B, K]`` (multi-label attributes: binary cross-entropy per attribute, summed over
    K and averaged over the batch, as the reference's CelebA setting).
    """
    if target.dtype in (torch.int64, torch.int32):
        return F.cross_entropy(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]


def gradient_penalty_on(critic_out: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017, Eq. 3) from a critic output already computed on ``x_hat``.

    GP = E[(||grad_x_hat D(x_hat)||_2 - 1)^2]; for a D with several heads (StarGAN's
    source head) the caller interpolates ``x_hat`` and runs the head itself.
    """
    (grad,) = autograd.grad(critic_out.sum(), x_hat, create_graph=True)  # [B, C, H, W]
    norm = (grad.flatten(1).pow(2).sum(dim=1) + 1e-12).sqrt()  # [B]
    return (norm - 1.0).pow(2).mean()
