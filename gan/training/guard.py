"""Divergence guard: stop a run whose losses went NaN/inf or whose game degenerated.

    guard = DivergenceGuard(patience=200, saturates=task.saturates, device=device)
    guard.update(*task.health(metrics))             # every step: loss_D, loss_G, D(x), D(G(z)); no host sync
    guard.check(step)                               # at report boundaries; raises DivergenceError

Per-step state lives in device tensors so a GPU step never waits on ``.item()``;
:meth:`check` reads it (and, under DDP, takes the worst value over all ranks) only at
report boundaries, so every rank stops at the same step.

A step is *degenerate* when either

- the losses did not move at all (``|loss - previous| <= 1e-7 * (1 + |loss|)`` for both
  D and G): training has frozen, e.g. dead ReLUs or a zero learning rate; or
- D separates real from fake completely (mean sigmoid(D(x)) >= 0.99 and mean
  sigmoid(D(G(z))) <= 0.01): G's gradient vanishes (Arjovsky & Bottou 2017). Skipped
  when ``saturates`` is false: a loss whose critic values are unbounded by design
  (the task asks its loss, e.g. ``LossPair.bounded`` for wgan-gp).

``patience`` consecutive degenerate steps stop the run.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from gan.errors import DivergenceError

SATURATED = 0.99  # mean sigmoid(D(x)) at or above, with mean sigmoid(D(G(z))) at or below 1 - this
FROZEN_RTOL = 1e-7
ADVICE = "lower train.lr_D / train.lr_G, enable model.spectral_norm_D or change model.loss; the generator was not exported"


class DivergenceGuard:
    """Counts non-finite and degenerate G steps; :meth:`check` raises DivergenceError."""

    def __init__(self, patience: int, saturates: bool = True, device: torch.device | str = "cpu") -> None:
        self.patience = int(patience)
        self.check_saturation = bool(saturates)
        zero = torch.zeros((), device=device)
        self.nonfinite = zero.clone()  # 1 once any loss was NaN/inf
        self.run = zero.clone()  # consecutive degenerate steps so far
        self.longest = zero.clone()  # longest such run since the last check
        self.frozen_run = zero.clone()  # the part of `longest` caused by frozen losses (for the message)
        self.prev: torch.Tensor | None = None  # [2] last (loss_D, loss_G)
        self.last = torch.zeros(4, device=device)  # [4] last (loss_D, loss_G, D(x), D(G(z)))

    @torch.no_grad()
    def update(self, loss_D: torch.Tensor, loss_G: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        """Record one G step: scalar losses and mean sigmoid outputs of D on real and fake."""
        losses = torch.stack([loss_D.detach().float(), loss_G.detach().float()])  # [2]
        self.last = torch.stack([losses[0], losses[1], d_real.detach().float(), d_fake.detach().float()])
        self.nonfinite = torch.maximum(self.nonfinite, (~torch.isfinite(losses).all()).float())
        frozen = torch.zeros((), dtype=torch.bool, device=losses.device)
        if self.prev is not None:
            frozen = ((losses - self.prev).abs() <= FROZEN_RTOL * (1 + losses.abs())).all()
        self.prev = losses
        degenerate = frozen
        if self.check_saturation:
            degenerate = degenerate | ((d_real >= SATURATED) & (d_fake <= 1 - SATURATED))
        self.run = (self.run + 1) * degenerate.float()
        self.frozen_run = (self.frozen_run + 1) * frozen.float()
        self.longest = torch.maximum(self.longest, self.run)

    def check(self, step: int) -> None:
        """Raise DivergenceError when any rank saw NaN/inf or ``patience`` degenerate steps."""
        flags = torch.stack([self.nonfinite, self.longest, self.frozen_run])  # [3]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        nonfinite, longest, frozen_run = (float(v) for v in flags.tolist())
        loss_D, loss_G, d_real, d_fake = (float(v) for v in self.last.tolist())
        self.longest.zero_()
        if nonfinite:
            raise DivergenceError(
                f"training diverged by step {step}: a loss became NaN or infinite (last loss/D = {loss_D:.4g}, loss/G = {loss_G:.4g}); {ADVICE}."
            )
        if longest >= self.patience:
            self.run.zero_()
            why = (
                f"the losses stopped changing (loss/D = {loss_D:.4g}, loss/G = {loss_G:.4g})"
                if frozen_run >= self.patience
                else f"D separates real from fake completely (D(x) = {d_real:.3f}, D(G(z)) = {d_fake:.3f})"
            )
            raise DivergenceError(
                f"training diverged by step {step}: {why} for {int(longest)} steps (train.divergence_patience = {self.patience}); {ADVICE}."
            )
