"""DP-SGD for the trainer's private optimisers (``OptimizerSpec.private``), with Opacus, for any task.

    dp = DPTraining.create(params.train.privacy, sample_rate=B * W / N, private_steps=steps * d_phases,
                           distributed=world_size > 1)
    wrapped = dp.wrap(net)                      # GradSampleModule: per-sample gradients, hooks on while it trains
    opt = dp.optimizer(torch.optim.Adam(...))   # clip each sample's gradient to C, add N(0, (sigma C)^2), step
    dp.epsilon()                                # spent so far at train.privacy.delta (the accountant)
    state = dp.state_dict()                     # the accountant's history: resume keeps epsilon

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") as applied to GANs
by Xie et al. 2018 (DPGAN) and Chen et al. 2020 (GS-WGAN): only the discriminator reads
real images, so only its optimiser is private; the generator's updates are
post-processing of D and carry the same guarantee. A D phase may call D on the real
batch and on as many fakes before one backward: Opacus sums the per-sample gradients
row by row, so each clipped unit holds exactly one real image (and a fake one, which is
not private), and the accountant charges one step of sample rate ``B * W / N`` (real
images only) per private optimiser step.

Under several workers the private networks are not wrapped in DDP: Opacus's
DistributedDPOptimizer clips locally, adds the noise on rank 0 only and all-reduces the
noised sums, so the noise is that of one global batch. Ranks build identical weights
(seeded) and stay identical because they all step with the same reduced gradient.

The accountant (RDP, Mironov 2017; or PRV, Gopi et al. 2021) assumes Poisson sampling;
the batches here are shuffled fixed-size batches, the usual approximation (as in
Opacus's own non-Poisson mode). Training metrics logged from real batches (losses, D(x),
gradient norms) are not privatised: the guarantee covers the weights, not the logs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gan.errors import ConfigError


def check_private(net: nn.Module, name: str) -> None:
    """Raise ConfigError when ``net`` has layers DP-SGD cannot train.

    BatchNorm mixes a batch's samples (no per-sample gradient); spectral normalisation's
    power-iteration buffers are not supported by Opacus's per-sample hooks.
    """
    from opacus import GradSampleModule
    from opacus.validators import ModuleValidator

    errors = [*ModuleValidator.validate(net, strict=False), *GradSampleModule.validate(net, strict=False)]
    if errors:
        kinds = sorted({type(m).__name__ for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) or hasattr(m, "parametrizations")})
        raise ConfigError(
            f"params.yaml: train.privacy.enabled but network {name} has layers DP-SGD cannot train ({', '.join(kinds) or type(errors[0]).__name__}); "
            "use model.arch dcgan or mlp with model.spectral_norm_D: false."
        )


def check_task(task: Any) -> None:
    """Every network of the task's private optimisers can be trained with DP-SGD (before any worker starts)."""
    nets = task.build_networks()
    for spec in task.optimizers().values():
        for name in spec.networks if spec.private else ():
            check_private(nets[name], name)


@dataclass
class DPTraining:
    """One run's DP-SGD settings and its accountant."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    sample_rate: float
    distributed: bool
    accountant: Any  # opacus.accountants.IAccountant

    @classmethod
    def create(cls, cfg: Any, *, sample_rate: float, private_steps: int, distributed: bool) -> DPTraining:
        """From ``train.privacy``: the noise as given, or derived from ``target_epsilon`` at ``delta`` over ``private_steps``."""
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier

        noise = cfg.noise_multiplier
        if noise is None:
            noise = get_noise_multiplier(target_epsilon=cfg.target_epsilon, target_delta=cfg.delta, sample_rate=sample_rate,
                                         steps=private_steps, accountant=cfg.accountant)  # fmt: skip
        return cls(float(noise), float(cfg.max_grad_norm), float(cfg.delta), float(sample_rate), distributed, create_accountant(cfg.accountant))

    def wrap(self, net: nn.Module, name: str) -> nn.Module:
        """``net`` with Opacus's per-sample gradient hooks; refuses layers Opacus cannot privatise (BatchNorm)."""
        from opacus import GradSampleModule

        check_private(net, name)
        # D's inputs (images) need no gradient in its own phase; Opacus's hooks work from the outputs
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")
        return GradSampleModule(net, loss_reduction="mean")

    def optimizer(self, optimizer: torch.optim.Optimizer, expected_batch_size: int) -> torch.optim.Optimizer:
        """``optimizer`` made private; the accountant steps with it (only when a step really happens)."""
        from opacus.optimizers import DistributedDPOptimizer, DPOptimizer

        kind = DistributedDPOptimizer if self.distributed else DPOptimizer
        dp = kind(optimizer, noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                  expected_batch_size=expected_batch_size, loss_reduction="mean")  # fmt: skip
        dp.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        return dp

    def steps(self) -> int:
        """Private optimiser steps counted so far."""
        return int(sum(n for _, _, n in self.accountant.history))

    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta`` (0 before the first private step)."""
        return float(self.accountant.get_epsilon(delta=self.delta)) if self.accountant.history else 0.0

    def metrics(self) -> dict[str, float]:
        """Logged at every report: ``privacy/epsilon`` and the settings it was computed from."""
        return {"privacy/epsilon": self.epsilon(), "privacy/noise_multiplier": self.noise_multiplier, "privacy/delta": self.delta}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(map(float, h[:2])) + [int(h[2])] for h in self.accountant.history], "noise_multiplier": self.noise_multiplier}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state.get("history", [])]

