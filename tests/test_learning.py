"""A real learning test: a tiny fully connected GAN on a 2-D mixture of Gaussians.

Four modes on a circle of radius 0.6 (std 0.05). A few hundred LSGAN steps
(Mao et al. 2017) with the zoo's ``mlp`` G and D, fixed seeds, one thread, a few
seconds. The untrained G puts its samples near none of the modes; the trained one
must put them near the modes, cover all four and, when conditional, send each
label to its own mode.

    .venv/bin/python -m pytest tests/test_learning.py -q
"""

from __future__ import annotations

import math

import torch

from gan.losses import loss_pair
from gan.models import build_D, build_G

torch.set_num_threads(1)

NUM_MODES = 4
RADIUS, STD = 0.6, 0.05
MODES = torch.stack(
    [RADIUS * torch.cos(torch.arange(NUM_MODES) * 2 * math.pi / NUM_MODES),
     RADIUS * torch.sin(torch.arange(NUM_MODES) * 2 * math.pi / NUM_MODES)],
    dim=1,
)  # [4, 2]
Z_DIM, WIDTH, DEPTH = 8, 32, 2
STEPS, BATCH, LR = 400, 128, 2e-3
NEAR = 3 * STD  # a sample "hits" a mode within three standard deviations


def sample_mixture(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [n, 2], mode index [n])`` from the mixture."""
    y = torch.randint(0, NUM_MODES, (n,), generator=gen)
    return MODES[y] + STD * torch.randn(n, 2, generator=gen), y


def train_gan(num_classes: int, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Train G and D with LSGAN for STEPS alternating steps; return the untrained and trained G."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    G = build_G("mlp", z_dim=Z_DIM, out_shape=[2], width=WIDTH, depth=DEPTH, num_classes=num_classes)
    D = build_D("mlp", in_shape=[2], width=WIDTH, depth=DEPTH, num_classes=num_classes)
    G_init = build_G("mlp", z_dim=Z_DIM, out_shape=[2], width=WIDTH, depth=DEPTH, num_classes=num_classes)
    G_init.load_state_dict(G.state_dict())
    opt_G = torch.optim.Adam(G.parameters(), LR, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), LR, betas=(0.5, 0.999))
    d_loss, g_loss = loss_pair("lsgan")
    for _ in range(STEPS):
        real, y = sample_mixture(BATCH, gen)
        y = y if num_classes else None
        fake = G(torch.randn(BATCH, Z_DIM, generator=gen), y)  # [B, 2]
        loss_D = d_loss(D(real, y), D(fake.detach(), y))
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        loss_G = g_loss(D(fake, y))
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()
    return G_init, G


@torch.no_grad()
def nearest_mode(G: torch.nn.Module, y: torch.Tensor | None, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``(distance to the nearest mode [n], its index [n])`` for n samples of G."""
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(123))
    x = G(z, y)  # [n, 2]
    return torch.cdist(x, MODES).min(dim=1)


def test_unconditional_mlp_gan_moves_samples_to_all_modes() -> None:
    G_init, G = train_gan(num_classes=0)
    dist_before, _ = nearest_mode(G_init, None)
    dist_after, mode = nearest_mode(G, None)
    hit_before = (dist_before < NEAR).float().mean().item()
    hit_after = (dist_after < NEAR).float().mean().item()
    assert dist_after.mean() < 0.75 * dist_before.mean()
    assert hit_after > 0.3 and hit_after > 2 * hit_before
    hits_per_mode = torch.bincount(mode[dist_after < NEAR], minlength=NUM_MODES)
    assert (hits_per_mode > 20).all(), f"modes missed: {hits_per_mode.tolist()}"


def test_conditional_mlp_gan_sends_each_label_to_its_mode() -> None:
    G_init, G = train_gan(num_classes=NUM_MODES)
    y = torch.arange(1000) % NUM_MODES
    _, mode_before = nearest_mode(G_init, y)
    dist_after, mode_after = nearest_mode(G, y)
    assert (mode_before == y).float().mean() < 0.5  # untrained: the label means nothing yet
    assert (mode_after == y).float().mean() > 0.95
    assert (dist_after < NEAR).float().mean() > 0.8
