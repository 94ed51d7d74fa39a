"""A real learning test through the project's own trainer: a 2-D mixture of Gaussians.

Four modes on a circle of radius 0.6 (std 0.05). The ``generate`` task's phases
(Dmain, Gmain with LSGAN, Mao et al. 2017) and the zoo's ``mlp`` G and D run in
:class:`gan.training.GANTrainer` via :func:`gan.training.fit`, exactly as the train stage
runs them; only the data differs: :class:`MixtureTask` overrides the task's batches
(points drawn from the mixture) and its networks' shapes (2-D points instead of
images). The untrained G puts its samples near none of the modes; the trained one must
put them near the modes, cover all four and, when conditional, send each label to its
own mode.

    .venv/bin/python -m pytest tests/test_learning.py -q
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from gan.config import parse_params
from gan.models import build_network
from gan.tasks.generate import GenerateTask
from gan.training import GANTrainer, fit

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


class MixtureTask(GenerateTask):
    """The generate task on 2-D points: same phases and losses, mlp networks of shape [2]."""

    def network_specs(self) -> dict[str, dict[str, Any]]:
        specs = super().network_specs()
        specs["G"]["kwargs"] = {**{k: v for k, v in specs["G"]["kwargs"].items() if k != "out_shape"}, "out_shape": [2], "depth": DEPTH}
        specs["D"]["kwargs"] = {**{k: v for k, v in specs["D"]["kwargs"].items() if k != "in_shape"}, "in_shape": [2], "depth": DEPTH}
        return specs

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int) -> Iterator[dict[str, Any]]:
        gen = torch.Generator().manual_seed(self.params.train.seed + consumed)
        while True:
            x, y = sample_mixture(self.params.train.batch_size, gen)
            yield {"image": x, "label": y if self.conditional else None}

    def grid(self, nets: dict[str, torch.nn.Module], seed: int = 0) -> tuple[torch.Tensor, int]:
        """A 2-D histogram of 2,000 samples as a one-tile picture (white = many samples)."""
        with torch.no_grad():
            z = torch.randn(2000, self.z_dim, generator=torch.Generator().manual_seed(seed))
            y = torch.arange(2000) % NUM_MODES if self.conditional else None
            x = nets["G"](z, y)  # [2000, 2]
        hist = torch.histogramdd(x.clamp(-1, 1), bins=[32, 32], range=[-1.0, 1.0, -1.0, 1.0]).hist
        return (hist / hist.max().clamp(min=1) * 2 - 1)[None, None], 1  # [1, 1, 32, 32] in [-1, 1]


def train_gan(num_classes: int, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Train with the project's trainer for STEPS steps; return the untrained and trained G."""
    params = parse_params({
        "prepare": {"image_size": 8},
        "model": {"arch": "mlp", "conditional": bool(num_classes), "z_dim": Z_DIM, "g_width": WIDTH, "d_width": WIDTH,
                  "loss": "lsgan"},
        "train": {"batch_size": BATCH, "steps": STEPS, "lr_G": LR, "lr_D": LR, "beta1": 0.5, "log_every": STEPS,
                  "checkpoint_every": STEPS, "sample_every": STEPS, "divergence_patience": STEPS, "seed": seed},
    })  # fmt: skip
    manifest = {"channels": 1, "image_size": 8, "num_classes": num_classes, "class_names": [str(k) for k in range(num_classes)]}
    task = MixtureTask(params, manifest)
    trainer = GANTrainer(params, data_dir=None, task=task)
    G_init = build_network(task.network_specs()["G"]["network"], **task.network_specs()["G"]["kwargs"])
    G_init.load_state_dict(trainer.network("G").state_dict())
    summary = fit(params, None, trainer=trainer, log=None)
    assert summary["step"] == STEPS
    return G_init, trainer.network("G")


@torch.no_grad()
def nearest_mode(G: torch.nn.Module, y: torch.Tensor | None, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``(distance to the nearest mode [n], its index [n])`` for n samples of G."""
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(123))
    x = G.eval()(z, y)  # [n, 2]
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
