"""GAN losses and regularisers: small pure functions on D's logits.

    d_loss_fn, g_loss_fn = loss_pair("hinge")
    loss_D = d_loss_fn(D(real, y), D(fake.detach(), y))
    loss_G = g_loss_fn(D(fake, y))

Notation: ``r = D(x)`` and ``f = D(G(z))`` are logits ``[N]``; ``sigma`` is the logistic
function, so the probability "real" is ``sigma(r)``. Logs of sigmoids are written with
softplus, which never overflows: ``-log sigma(t) = softplus(-t)`` and
``-log(1 - sigma(t)) = softplus(t)``. Every loss is a mean over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import autograd

from gan.models.infogan import code_targets

DLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GLoss = Callable[[torch.Tensor], torch.Tensor]


# --- minimax and non-saturating (Goodfellow et al. 2014) ---------------------------------


def d_loss_minimax(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss of the original GAN (Goodfellow et al. 2014).

    L_D = -E[log D(x)] - E[log(1 - D(G(z)))] = E[softplus(-r)] + E[softplus(f)]
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss of the minimax game (Goodfellow et al. 2014); saturates when D wins.

    L_G = E[log(1 - D(G(z)))] = -E[softplus(f)]
    """
    return -F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating G loss (Goodfellow et al. 2014, Sec. 3): strong gradients early on.

    L_G = -E[log D(G(z))] = E[softplus(-f)]
    """
    return F.softplus(-fake_logits).mean()


# --- hinge (Lim & Ye 2017; Miyato et al. 2018) ---------------------------------------------


def d_loss_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Geometric GAN's hinge loss for D (Lim & Ye 2017).

    L_D = E[relu(1 - r)] + E[relu(1 + f)]
    """
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss paired with the hinge D loss (Lim & Ye 2017).

    L_G = -E[f]
    """
    return -fake_logits.mean()


# --- Wasserstein (Arjovsky et al. 2017; Gulrajani et al. 2017) -----------------------------


def d_loss_wasserstein(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The critic's loss of WGAN: minus the Kantorovich-Rubinstein estimate (Arjovsky et al. 2017).

    L_D = E[f] - E[r]; pair with :func:`gradient_penalty` (WGAN-GP) and n_critic > 1.
    """
    return fake_logits.mean() - real_logits.mean()


def g_loss_wasserstein(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss of WGAN (Arjovsky et al. 2017).

    L_G = -E[f]
    """
    return -fake_logits.mean()


# --- least squares (Mao et al. 2017) -------------------------------------------------------


def d_loss_least_squares(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """LSGAN's D loss with targets a=0 (fake), b=1 (real) (Mao et al. 2017, Eq. 2).

    L_D = 1/2 E[(r - 1)^2] + 1/2 E[f^2]
    """
    return 0.5 * (real_logits - 1.0).pow(2).mean() + 0.5 * fake_logits.pow(2).mean()


def g_loss_least_squares(fake_logits: torch.Tensor) -> torch.Tensor:
    """LSGAN's G loss with target c=1 (Mao et al. 2017, Eq. 2).

    L_G = 1/2 E[(f - 1)^2]
    """
    return 0.5 * (fake_logits - 1.0).pow(2).mean()


# --- regularisers ------------------------------------------------------------------------


def gradient_penalty(
    D: Callable[..., torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP's two-sided penalty (Gulrajani et al. 2017, Eq. 3), without its weight.

    GP = E[(||grad_x D(x_hat)||_2 - 1)^2],  x_hat = eps x + (1 - eps) G(z),  eps ~ U[0, 1] per sample

    Differentiable w.r.t. D's parameters (``create_graph=True``); the caller multiplies
    by ``gp_weight`` (lambda = 10 in the paper). ``y`` is passed on to a conditional D.
    """
    n = real.shape[0]
    eps = torch.rand((n,) + (1,) * (real.dim() - 1), generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)  # [N, C, H, W]
    logits = D(x_hat) if y is None else D(x_hat, y)  # [N]
    (grad,) = autograd.grad(logits.sum(), x_hat, create_graph=True)  # [N, C, H, W]
    # The small constant keeps the square root differentiable where the gradient is zero.
    norm = (grad.flatten(1).pow(2).sum(dim=1) + 1e-12).sqrt()  # [N]
    return (norm - 1.0).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, Eq. 9), without its weight: E[||grad_x D(x)||^2] on real data.

    ``real`` must have ``requires_grad=True`` before ``real_logits = D(real)``. The
    regulariser is ``gamma / 2 * r1_penalty``; with lazy regularisation (Karras et al.
    2020) it is applied every ``k`` D steps with weight ``gamma / 2 * k``.
    """
    (grad,) = autograd.grad(real_logits.sum(), real, create_graph=True)  # [N, C, H, W]
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def infogan_mi_loss(q: torch.Tensor, codes: torch.Tensor, categorical: int, continuous: int) -> torch.Tensor:
    """InfoGAN's variational lower bound on I(c; G(z, c)), negated (Chen et al. 2016, Eq. 5).

    L_I = E[-log Q(c_cat | x)] + E[1/2 ||c_cont - mu(x)||^2]
        = cross_entropy(q_cat, argmax c_cat) + 1/2 sum_j (c_j - q_j)^2     (unit-variance Gaussian Q)

    ``q [N, categorical + continuous]`` is D's Q head on ``G(z)``: categorical logits
    then continuous means; ``codes [N, categorical + continuous]`` are the last entries
    of ``z`` (see :mod:`gan.models.infogan`). The constant entropy H(c) is dropped.
    Minimised by both G and Q, weighted by ``model.infogan.weight``.
    """
    if q.shape[1] != categorical + continuous:
        raise ValueError(f"q has {q.shape[1]} entries, expected {categorical} + {continuous}")
    category, values = code_targets(codes, categorical, continuous)
    loss = q.new_zeros(())
    if category is not None:
        loss = loss + F.cross_entropy(q[:, :categorical], category)
    if values is not None:
        loss = loss + 0.5 * (values - q[:, categorical:]).pow(2).sum(dim=1).mean()
    return loss


# --- image-to-image translation (CycleGAN, pix2pix, StarGAN) -----------------------------


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


# --- config names ------------------------------------------------------------------------


@dataclass(frozen=True)
class LossPair:
    """A ``model.loss`` choice: D's and G's loss functions and the properties code may ask about.

    ``bounded``: D's logits stand for probabilities, so D(x) -> 1 with D(G(z)) -> 0 means D
    has won (a divergence sign); a Wasserstein critic's values are unbounded by design.
    ``gradient_penalty``: the loss is meant to be paired with :func:`gradient_penalty`.
    """

    d: DLoss
    g: GLoss
    bounded: bool = True
    gradient_penalty: bool = False


LOSSES: dict[str, LossPair] = {
    "minimax": LossPair(d_loss_minimax, g_loss_minimax),
    "nonsaturating": LossPair(d_loss_minimax, g_loss_nonsaturating),
    "hinge": LossPair(d_loss_hinge, g_loss_hinge),
    "wgan-gp": LossPair(d_loss_wasserstein, g_loss_wasserstein, bounded=False, gradient_penalty=True),
    "lsgan": LossPair(d_loss_least_squares, g_loss_least_squares),
}
LOSS_PAIRS: dict[str, tuple[DLoss, GLoss]] = {name: (pair.d, pair.g) for name, pair in LOSSES.items()}


def loss_spec(name: str) -> LossPair:
    """The :class:`LossPair` of a ``model.loss`` name."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; known: {', '.join(LOSSES)}")
    return LOSSES[name]


def loss_pair(name: str) -> tuple[DLoss, GLoss]:
    """``(d_loss(real_logits, fake_logits), g_loss(fake_logits))`` for a ``model.loss`` name.

    wgan-gp returns the Wasserstein pair; the caller adds :func:`gradient_penalty`.
    """
    pair = loss_spec(name)
    return pair.d, pair.g


# --- anomaly detection: GANomaly (Akçay et al. 2018) and f-AnoGAN (Schlegl et al. 2019) ----


def ganomaly_adversarial_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """GANomaly's L_adv (Eq. 1): feature matching on D's last hidden layer.

    L_adv = E ||f(x) - f(G(x))||_2^2   (mean over features and batch, as the reference's l2_loss)
    """
    return (real_features - fake_features).pow(2).mean()


def ganomaly_contextual_loss(real: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """GANomaly's L_con (Eq. 2): L1 image reconstruction, L_con = E ||x - G(x)||_1."""
    return (real - reconstruction).abs().mean()


def ganomaly_encoder_loss(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """GANomaly's L_enc (Eq. 3): L2 between the two latents, L_enc = E ||G_E(x) - E(G(x))||_2^2."""
    return (z - z_hat).pow(2).mean()


def izif_loss(real: torch.Tensor, reconstruction: torch.Tensor, real_features: torch.Tensor, fake_features: torch.Tensor,
              kappa: float) -> torch.Tensor:  # fmt: skip
    """f-AnoGAN's izi_f encoder loss (Schlegl et al. 2019, Eq. 6), G and D frozen.

    L_izi_f = 1/n ||x - G(E(x))||^2 + kappa * 1/n_d ||f(x) - f(G(E(x)))||^2
    """
    return (real - reconstruction).pow(2).mean() + kappa * (real_features - fake_features).pow(2).mean()


# --- super-resolution (the upscale task; Ledig et al. 2017, Wang et al. 2018) --------------


def pixel_loss_l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """ESRGAN's pixel loss: L_1 = E|G(x_lr) - x_hr| (PSNR-oriented pre-training and x1e-2 in the GAN phase)."""
    return (sr - hr).abs().mean()


def perceptual_loss(sr_features: list[torch.Tensor], hr_features: list[torch.Tensor]) -> torch.Tensor:
    """Perceptual loss (Johnson et al. 2016; ESRGAN uses VGG19 conv5_4 before its activation):
    L_percep = sum_l E|phi_l(G(x_lr)) - phi_l(x_hr)| over the feature maps phi_l."""
    return torch.stack([(a - b).abs().mean() for a, b in zip(sr_features, hr_features, strict=True)]).sum()


def d_loss_relativistic_average(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's relativistic average loss (Jolicoeur-Martineau 2018; ESRGAN's RaGAN, as BasicSR computes it).

    D_Ra(a, b) = sigma(C(a) - E[C(b)]);
    L_D = -1/2 E[log D_Ra(x_r, x_f)] - 1/2 E[log(1 - D_Ra(x_f, x_r))]
        = 1/2 E[softplus(-(r - E f))] + 1/2 E[softplus(f - E r)]
    """
    return 0.5 * F.softplus(-(real_logits - fake_logits.mean())).mean() + 0.5 * F.softplus(fake_logits - real_logits.mean()).mean()


def g_loss_relativistic_average(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's relativistic average loss (symmetric to D's: G benefits from the gradients of real and fake).

    L_G = -1/2 E[log(1 - D_Ra(x_r, x_f))] - 1/2 E[log D_Ra(x_f, x_r)]
        = 1/2 E[softplus(r - E f)] + 1/2 E[softplus(-(f - E r))]
    """
    return 0.5 * F.softplus(real_logits - fake_logits.mean()).mean() + 0.5 * F.softplus(-(fake_logits - real_logits.mean())).mean()


# --- text-to-image: StackGAN (Zhang et al. 2017) -------------------------------------------


def conditioning_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Conditioning augmentation's regulariser (StackGAN Eq. 3-6): KL(N(mu, sigma^2) || N(0, I)).

    L_KL = 1/2 E[mu^2 + sigma^2 - 1 - log sigma^2]   (mean over batch and dims, as the reference's KL_loss)

    ``mu``, ``logvar [B, c_dim]`` from a :class:`gan.models.stackgan.ConditioningAugmentation`;
    G adds it weighted by ``train.stackgan.kl_weight`` (lambda = 1 in the paper).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def d_loss_matching_aware(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, wrong_logits: torch.Tensor
) -> torch.Tensor:
    """StackGAN's matching-aware D loss (Reed et al. 2016's GAN-CLS; the reference's compute_discriminator_loss).

    L_D = -E[log D(x, t)] - 1/2 (E[log(1 - D(G(z, t), t))] + E[log(1 - D(x, t_wrong))])
        = E[softplus(-r)] + 1/2 (E[softplus(f)] + E[softplus(w)])

    ``r = D(real, its caption)``, ``f = D(fake, the caption it was drawn from)``,
    ``w = D(real, another image's caption)`` (the reference pairs image i with caption i+1):
    D learns to reject real images that do not match the text.
    """
    fake_or_wrong = F.softplus(fake_logits).mean() + F.softplus(wrong_logits).mean()
    return F.softplus(-real_logits).mean() + 0.5 * fake_or_wrong
