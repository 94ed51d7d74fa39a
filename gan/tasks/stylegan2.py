"""StyleGAN2-ADA's training recipe inside the ``generate`` task (``model.arch: stylegan2``).

Reference: NVlabs/stylegan2-ada-pytorch, training/loss.py (StyleGAN2Loss) and
training/training_loop.py. Phases of one training step (the trainer runs them as it runs
any task's):

    Dmain   fetch a batch; model.loss's D term on D(x) and D(G(z)), both through ADA with
            probability p; E[sign(D(x))] accumulates for p's update. The reference's loss is
            model.loss: nonsaturating, L_D = softplus(D(G(z))) + softplus(-D(x))
    Dreg    every r1_interval D steps: gamma / 2 * ||grad_x D(x)||^2 * r1_interval (lazy R1)
    Gmain   model.loss's G term (nonsaturating: softplus(-D(G(z)))) with style mixing;
            w_avg tracked (beta 0.995)
    Greg    every pl_interval G steps, on batch // pl_batch_shrink samples:
            pl_weight * (||J_w^T y|| - a)^2 * pl_interval, y ~ N(0, I) / sqrt(H W),
            a the running mean of ||J_w^T y|| (decay pl_decay)

Lazy regularisation changes the optimisers as the reference does: with interval k,
lr <- lr * k / (k + 1) and beta <- beta^(k / (k + 1)). R1's gamma is train.r1_gamma, or
the reference's heuristic 0.0002 * res^2 / batch when that is 0. The task state (the
path-length mean, ADA's p, the real images shown and p's pending statistics) goes into
every checkpoint, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import autograd

from gan.ada import ada_adjust, ada_augment
from gan.losses import LossPair
from gan.models.stylegan2 import w_stats
from gan.tasks.base import Batch, Metrics, OptimizerSpec, Phase, PhaseContext


def path_length_penalty(pl_lengths: torch.Tensor, pl_mean: torch.Tensor) -> torch.Tensor:
    """Path-length regulariser (Karras et al. 2020, Eq. 4) per sample: (||J_w^T y||_2 - a)^2."""
    return (pl_lengths - pl_mean).square()


def lazy_ratio(interval: int) -> float:
    """The reference's minibatch ratio for a regulariser run every ``interval`` steps: k / (k + 1)."""
    return interval / (interval + 1)


def r1_gamma_heuristic(image_size: int, batch_size: int) -> float:
    """The reference's default R1 weight (``--gamma`` auto): 0.0002 * res^2 / batch."""
    return 0.0002 * image_size**2 / batch_size


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (a phase sees the wrapper of each network it trains)."""
    inner = getattr(module, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else module


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum in place over ranks (a no-op without torch.distributed): keeps replicas' statistics identical."""
    if _world() > 1:
        for t in tensors:
            dist.all_reduce(t)


class StyleGAN2Recipe:
    """Phases, optimisers and state of StyleGAN2-ADA for :class:`gan.tasks.generate.GenerateTask`."""

    def __init__(
        self, params: Any, image_size: int, conditional: bool, loss_pair: LossPair
    ) -> None:
        self.params, self.loss_pair = params, loss_pair
        cfg, sg = params.train, params.train.stylegan2
        self.sg = sg
        self.z_dim = int(params.model.z_dim)
        self.conditional = conditional
        self.r1_gamma = float(cfg.r1_gamma) or r1_gamma_heuristic(
            image_size, cfg.batch_size * cfg.num_workers
        )
        self.ada = sg.ada_target > 0  # never beside train.diffaugment: gan.config checks
        # task state (checkpointed): see state_dict
        self.pl_mean = torch.zeros([])
        self.ada_p = torch.zeros([])
        self.ada_signs = torch.zeros(2)  # [sum of sign(D(x)), count] since p's last update
        self.images = 0  # real images shown to D, all ranks

    # ---- optimisers and phases -------------------------------------------------------
    def optimizers(self) -> dict[str, OptimizerSpec]:
        cfg = self.params.train
        out = {}
        for name, lr, interval, on in (("G", cfg.lr_G, self.sg.pl_interval, self.sg.pl_weight > 0),
                                       ("D", cfg.lr_D, cfg.r1_interval, True)):  # fmt: skip
            c = lazy_ratio(interval) if on else 1.0
            out[name] = OptimizerSpec((name,), lr * c, (cfg.beta1**c, cfg.beta2**c))
        return out

    def phases(self) -> list[Phase]:
        cfg = self.params.train
        d = [
            Phase("Dmain", "D", self.d_main, fetch=True, grad_norm="grad_norm/D"),
            Phase("Dreg", "D", self.d_reg, every=cfg.r1_interval),
        ]
        g = [Phase("Gmain", "G", self.g_main, grad_norm="grad_norm/G")]
        if self.sg.pl_weight > 0:
            g.append(Phase("Greg", "G", self.g_reg, every=self.sg.pl_interval))
        return d * cfg.n_critic + g

    # ---- helpers ----------------------------------------------------------------------
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """ADA with the current p, or DiffAugment when that is chosen instead, or nothing."""
        if self.ada:
            return ada_augment(x, self.ada_p.to(x.device))
        if self.params.train.diffaugment:
            from gan.diffaugment import diff_augment

            return diff_augment(x, self.params.train.diffaugment)
        return x

    def generate(self, G: torch.nn.Module, n: int, y: torch.Tensor | None, device: torch.device,
                 return_ws: bool = False) -> Any:  # fmt: skip
        """``G(z, y)`` with style mixing (probability mixing_prob, one cutoff per batch, as the reference)."""
        z = torch.randn(n, self.z_dim, device=device)  # [n, z_dim]
        num_ws = unwrap(G).num_ws
        cutoff = None
        if self.sg.mixing_prob > 0 and torch.rand([]).item() < self.sg.mixing_prob:
            cutoff = int(torch.randint(1, num_ws, []).item())
        z_mix = torch.randn_like(z) if cutoff is not None else None
        return G(z, y, z_mix=z_mix, mix_cutoff=cutoff, return_ws=return_ws)

    # ---- phase losses -----------------------------------------------------------------
    def d_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        G, D = ctx["G"], ctx["D"]
        real, y = batch["image"], batch["label"]
        with torch.no_grad():
            fake = self.generate(G, real.shape[0], y, ctx.device)  # [B, C, H, W]; G is frozen here
        with ctx.autocast():
            real_logits = D(ctx.memory_format(self.augment(real)), y).float()  # [B]
            fake_logits = D(ctx.memory_format(self.augment(fake)), y).float()
        loss = self.loss_pair.d(real_logits, fake_logits)
        out: Metrics = {"loss/D": loss.detach()}
        out["D(x)"] = torch.sigmoid(real_logits.detach()).mean()
        out["D(G(z))"] = torch.sigmoid(fake_logits.detach()).mean()
        self.images += real.shape[0] * _world()
        if self.ada:
            self._ada_update(ctx, real_logits.detach())
            out["ada/p"] = self.ada_p.detach().clone()
        return loss, out

    def _ada_update(self, ctx: PhaseContext, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(x)); every ada_interval D steps move p towards the target (all on the device)."""
        signs = self.ada_signs.to(ctx.device) + torch.stack(
            [real_logits.sign().sum(), torch.tensor(float(real_logits.numel()), device=ctx.device)]
        )
        if ctx.count % self.sg.ada_interval == 0:
            _all_reduce_sum(signs)
            shown = self.params.train.batch_size * _world() * self.sg.ada_interval
            self.ada_p = ada_adjust(
                self.ada_p.to(ctx.device),
                signs[0] / signs[1],
                self.sg.ada_target,
                shown,
                self.sg.ada_kimg,
            )
            signs = torch.zeros_like(signs)
        self.ada_signs = signs

    def d_reg(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Lazy R1 on the (augmented) current real batch, gradient taken at the unaugmented image."""
        real = batch["image"].detach().requires_grad_(True)
        with ctx.autocast():
            real_logits = ctx["D"](self.augment(real), batch["label"]).float()
        (grad,) = autograd.grad(real_logits.sum(), real, create_graph=True)  # [B, C, H, W]
        r1 = (
            grad.flatten(1).square().sum(dim=1).mean()
        )  # R1 = E||grad_x D(x)||^2 (Mescheder et al. 2018)
        # the zero-weighted logits join every D parameter to the graph (DDP), as the reference does
        loss = 0.5 * self.r1_gamma * self.params.train.r1_interval * r1 + 0.0 * real_logits.sum()
        return loss, {"loss/r1": r1.detach()}

    def g_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        G, D = ctx["G"], ctx["D"]
        y = batch["label"]
        with ctx.autocast():
            fake, ws = self.generate(G, batch["image"].shape[0], y, ctx.device, return_ws=True)
            logits = D(ctx.memory_format(self.augment(fake)), y).float()
        loss = self.loss_pair.g(logits)
        # w_avg tracks the mean w (per class) over every rank: replicas keep one w_avg
        sums, counts = w_stats(ws[:, 0], y, unwrap(G).num_classes)
        _all_reduce_sum(sums, counts)
        unwrap(G).mapping.update_w_avg(sums, counts, self.sg.w_avg_beta)
        return loss, {"loss/G": loss.detach()}

    def g_reg(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Lazy path-length regularisation on a shrunk batch (float32: it differentiates twice)."""
        n = max(1, batch["image"].shape[0] // self.sg.pl_batch_shrink)
        y = batch["label"][:n] if batch["label"] is not None else None
        img, ws = self.generate(
            ctx["G"], n, y, ctx.device, return_ws=True
        )  # [n, C, H, W], [n, num_ws, w_dim]
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grads,) = autograd.grad((img * noise).sum(), ws, create_graph=True)  # [n, num_ws, w_dim]
        pl_lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()  # [n]
        batch_mean = pl_lengths.detach().mean()
        stats = torch.stack([batch_mean * n, torch.tensor(float(n), device=ctx.device)])
        _all_reduce_sum(stats)
        self.pl_mean = self.pl_mean.to(ctx.device).lerp(stats[0] / stats[1], self.sg.pl_decay)
        penalty = path_length_penalty(pl_lengths, self.pl_mean)
        # img[:, 0, 0, 0] * 0 joins toRGB's last bias to the graph (DDP), as the reference does
        loss = (img[:, 0, 0, 0] * 0 + penalty * self.sg.pl_weight).mean() * self.sg.pl_interval
        return loss, {"loss/pl": penalty.detach().mean(), "pl_mean": self.pl_mean.detach().clone()}

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"pl_mean": self.pl_mean.detach().cpu().clone(), "ada_p": self.ada_p.detach().cpu().clone(),
                "ada_signs": self.ada_signs.detach().cpu().clone(), "images": int(self.images)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.pl_mean = state["pl_mean"].clone()
        self.ada_p = state["ada_p"].clone()
        self.ada_signs = state["ada_signs"].clone()
        self.images = int(state["images"])
