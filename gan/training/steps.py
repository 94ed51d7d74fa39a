"""One phase of a training step, for any task: freeze, loss, backward, gradient norm, step.

    out = run_phase(phase, nets, optimizer, batch, ctx_args)   # nets: a NetworkSet

A phase (:class:`gan.tasks.base.Phase`) names the optimiser it steps; the networks of
that optimiser are trained and every other network is frozen. The phase's loss gets
a :class:`gan.tasks.base.PhaseContext` whose networks are:

- the DDP wrapper of each network the phase trains (its gradients are all-reduced);
- the raw module, with ``requires_grad`` off, of every other network: its gradients
  are neither computed nor all-reduced, so no parameter of a wrapped module is ever
  "unused" in a step that runs the wrapper, and a frozen G's output in a D phase
  carries no graph (it is a constant for D, as under ``no_grad``).

A D phase may call D twice (real, fake) before one backward(); that is safe because
the wrappers are built with ``forward_sync_buffers=False`` (see ``loop.DDP_KWARGS``): a
buffer broadcast in the second forward would otherwise overwrite BatchNorm statistics
that the first forward's graph still needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gan.tasks.base import Batch, Metrics, Phase, PhaseContext


@dataclass
class NetworkSet:
    """A task's networks: raw modules, their (possibly DDP) wrappers, which are trainable now."""

    raw: dict[str, nn.Module]
    wrapped: dict[str, nn.Module]
    trainable: dict[str, bool] = field(default_factory=dict)

    def train_only(self, names: tuple[str, ...]) -> None:
        """Make ``names`` trainable and freeze the rest (touching only networks whose state changes).

        Freezing comes first: where a trained network is a part of a frozen one (StackGAN's
        stages inside its G), the part ends up trainable whatever the networks' order.
        """
        for want in (False, True):
            for name, module in self.raw.items():
                if (name in names) is want and self.trainable.get(name) is not want:
                    module.requires_grad_(want)
                    self.trainable[name] = want
                    # per-sample gradient hooks (DP-SGD's wrapper) record only while the network trains
                    toggle = getattr(self.wrapped[name], "enable_hooks" if want else "disable_hooks", None)
                    if toggle is not None:
                        toggle()

    def for_phase(self, names: tuple[str, ...]) -> dict[str, nn.Module]:
        """The networks a phase sees: wrappers of those it trains, raw modules of the others."""
        return {name: self.wrapped[name] if name in names else module for name, module in self.raw.items()}


def run_phase(
    phase: Phase,
    nets: NetworkSet,
    trains: tuple[str, ...],
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    **ctx_args: Any,
) -> Metrics:
    """One optimiser step of ``phase``; returns its metrics (scalar tensors, no host sync)."""
    nets.train_only(trains)
    ctx = PhaseContext(nets=nets.for_phase(trains), **ctx_args)
    loss, out = phase.loss(ctx, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if phase.grad_norm:
        out[phase.grad_norm] = grad_norm(*(nets.raw[n] for n in trains))
    optimizer.step()
    return out


@torch.no_grad()
def grad_norm(*modules: nn.Module) -> torch.Tensor:
    """The L2 norm over all gradients of ``modules`` (a scalar tensor, no host sync)."""
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(modules[0].parameters()).device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
