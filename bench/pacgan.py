"""PacGAN (Lin et al. 2018) as a task of this project: the generate task's phases with D seeing m samples at once.

    from pacgan import train_packed
    G = train_packed(G_spec, D_spec, sample_real, pack=4, steps=8000, seed=0, batch=100, lr=1e-3, decay=True)

Used by the mode-collapse benchmarks (``quality_mixtures.py``, ``stacked_digits.py``):
their models train in the project's own trainer (:class:`gan.training.GANTrainer`),
with only the data, the packing of D's inputs and (optionally) a linear learning-rate
decay (the task's ``lr_scale``) defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from gan.config import parse_params
from gan.tasks.base import Batch, Metrics, PhaseContext
from gan.tasks.generate import GenerateTask
from gan.training import GANTrainer, fit

SampleReal = Callable[[int, np.random.Generator], torch.Tensor]  # (n, rng) -> [n, ...] in G's output range


class PacGANTask(GenerateTask):
    """Unconditional generate task whose D takes ``pack`` real or ``pack`` generated samples joined along dim 1."""

    def __init__(self, params: Any, manifest: dict[str, Any], *, G_spec: dict, D_spec: dict, sample_real: SampleReal,
                 pack: int, decay: bool) -> None:  # fmt: skip
        super().__init__(params, manifest)
        self.G_spec, self.D_spec, self.sample_real, self.pack, self.decay = G_spec, D_spec, sample_real, pack, decay
        self.z_dim = int(G_spec["kwargs"]["z_dim"])

    def network_specs(self) -> dict[str, dict[str, Any]]:
        return {"G": self.G_spec, "D": self.D_spec}

    def lr_scale(self, step: int) -> dict[str, float]:
        # a linear decay to 0: with a short budget the last steps sharpen the modes
        return {"G": 1.0 - step / self.params.train.steps, "D": 1.0 - step / self.params.train.steps} if self.decay else {}

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B m, C, ...]`` -> ``[B, m C, ...]``: m samples per D input."""
        return x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int) -> Iterator[Batch]:
        rng = np.random.default_rng(self.params.train.seed + consumed)
        while True:
            yield {"image": self.packed(self.sample_real(self.params.train.batch_size * self.pack, rng)), "label": None}

    def fakes(self, ctx: PhaseContext, batch: int) -> torch.Tensor:
        return self.packed(ctx["G"](torch.randn(batch * self.pack, self.z_dim), None))

    def d_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        real_logits = ctx["D"](batch["image"], None)
        fake_logits = ctx["D"](self.fakes(ctx, batch["image"].shape[0]), None)
        loss = self.loss_pair.d(real_logits, fake_logits)
        return loss, {"loss/D": loss.detach(), "D(x)": torch.sigmoid(real_logits.detach()).mean(),
                      "D(G(z))": torch.sigmoid(fake_logits.detach()).mean()}  # fmt: skip

    def g_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        loss = self.loss_pair.g(ctx["D"](self.fakes(ctx, batch["image"].shape[0]), None))
        return loss, {"loss/G": loss.detach()}

    def grid(self, nets: dict[str, torch.nn.Module], seed: int = 0) -> tuple[torch.Tensor, int]:
        if len(self.G_spec["kwargs"].get("out_shape", [0, 0, 0])) != 3:  # points, not images: no picture
            return torch.zeros(1, 1, 8, 8), 1
        return super().grid(nets, seed)


def train_packed(G_spec: dict, D_spec: dict, sample_real: SampleReal, *, pack: int, steps: int, seed: int, batch: int,
                 lr: float, decay: bool = False, loss: str = "nonsaturating") -> torch.nn.Module:  # fmt: skip
    """Train with the project's trainer (Adam, betas (0.5, 0.999), no EMA in the result); return G in eval mode."""
    params = parse_params({
        "prepare": {"image_size": 8},
        "model": {"arch": "mlp", "conditional": False, "loss": loss},
        "train": {"batch_size": batch, "steps": steps, "lr_G": lr, "lr_D": lr, "beta1": 0.5, "beta2": 0.999, "seed": seed,
                  "log_every": steps, "checkpoint_every": steps, "sample_every": steps, "divergence_patience": steps},
    })  # fmt: skip
    manifest = {"channels": 1, "image_size": 8, "num_classes": 0, "class_names": []}
    task = PacGANTask(params, manifest, G_spec=G_spec, D_spec=D_spec, sample_real=sample_real, pack=pack, decay=decay)
    trainer = GANTrainer(params, None, task=task)
    fit(params, None, trainer=trainer, log=None)
    return trainer.network("G").eval()
