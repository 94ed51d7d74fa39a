"""StackGAN's two stages inside the ``generate`` task (``model.arch: stackgan``).

Reference: hanzhanggit/StackGAN-Pytorch, code/trainer.py and code/miscc/utils.py. A
caption's embedding (featurize's text encoder, :mod:`gan.text_encoder`) conditions both
stages through conditioning augmentation (c ~ N(mu, sigma^2) from the embedding):

    Stage I   steps [0, stage1_steps): G1 draws a stage1_size image from z and c;
              D1 judges it at that size. Phases D1main, G1main.
    Stage II  steps [stage1_steps, steps): G1 is frozen; G2 takes G1's image (down-sampled,
              joined with its own c) through residual blocks and up-sampling to the full
              size; D2 judges it. Phases D2main, G2main.

    D  (matching-aware)  L_D = l(D(x, t), real) + 1/2 [l(D(G(z, t), t), fake) + l(D(x, t'), fake)]
                         t' a caption of another image of the batch; l = model.loss's terms
                         (binary cross-entropy in the paper: model.loss nonsaturating)
    G                    L_G = l(D(G(z, t), t), real) + kl_weight * KL(N(mu, sigma^2) || N(0, I))

Adam with train.lr_G / lr_D and betas (2e-4, (0.5, 0.999) in the paper), the rates
halved every train.stackgan.lr_decay_steps within each stage. The exported generator
(``stackgan.G``) holds the text encoder, both stages and each class's mean caption
embedding, so class labels still condition it (``gan augment --labels``), and captions
do (``gan augment --captions``). Its ``stage`` buffer follows the schedule, so an
evaluation during Stage I measures Stage I's images (upsampled bicubically).

Networks: ``G`` (the whole generator, never trained as such) whose ``stage1`` and
``stage2`` modules are the networks ``G1`` and ``G2`` (shared modules: the optimiser of
one stage never touches the other), ``D1``, ``D2``; ``G_ema`` the EMA copy of ``G``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import ConfigError
from gan.losses import LossPair, conditioning_kl
from gan.tasks.base import Batch, Metrics, OptimizerSpec, Phase, PhaseContext

STAGES = ("G1", "G2")


def stage1_size(image_size: int, configured: int) -> int:
    """Stage I's resolution: model.stackgan.stage1_size, or half the image size when 0."""
    return int(configured) or image_size // 2


def mismatched(emb: torch.Tensor) -> torch.Tensor:
    """Each row paired with the next row's caption (the reference's wrong captions for real images)."""
    return torch.roll(emb, shifts=1, dims=0)


def matching_aware_d(pair: LossPair, real_logits: torch.Tensor, fake_logits: torch.Tensor, wrong_logits: torch.Tensor) -> torch.Tensor:
    """real vs (fake + wrong) / 2: 1/2 [L_D(real, fake) + L_D(real, wrong)] (the real term counts once)."""
    return 0.5 * (pair.d(real_logits, fake_logits) + pair.d(real_logits, wrong_logits))


def class_means(table: torch.Tensor, y: np.ndarray | None, num_classes: int) -> torch.Tensor:
    """Each class's mean caption embedding ``[K, text_dim]``; one row (all captions) without classes."""
    if y is None or num_classes == 0:
        return table.mean(0, keepdim=True)
    labels = torch.as_tensor(y)
    return torch.stack([table[labels == k].mean(0) for k in range(num_classes)])


class StackGANRecipe:
    """Networks, phases, schedule and batches of StackGAN for :class:`gan.tasks.generate.GenerateTask`."""

    def __init__(self, params: Any, manifest: dict[str, Any], conditional: bool, loss_pair: LossPair) -> None:
        # model.loss is never wgan-gp here (its matching-aware D is trained with a cross-entropy): gan.config checks
        from gan.data.captions import has_captions

        if not has_captions(manifest):
            raise ConfigError("model.arch = 'stackgan' needs captions, but the prepared data has none; set prepare.captions.source and run dvc repro prepare.")
        self.params, self.manifest, self.pair = params, manifest, loss_pair
        self.conditional = conditional
        self.image_size, self.channels = int(manifest["image_size"]), int(manifest["channels"])
        self.size1 = stage1_size(self.image_size, params.model.stackgan.stage1_size)
        self.encoder: Any = None
        self.encoder_spec: dict[str, Any] | None = None
        self._table: torch.Tensor | None = None  # train captions' embeddings [N, text_dim], by row
        self._class_embeddings: torch.Tensor | None = None  # [max(K, 1), text_dim]

    # ---- the text encoder (featurize's output) -----------------------------------------
    def use_inputs(self, data_dir: Any, features_dir: Any) -> None:
        """Load featurize's text encoder and embed the training captions (row by row) and each class's."""
        from gan.data import load_captions
        from gan.data.shards import shard_arrays
        from gan.text_encoder import embed_captions, load_text_encoder

        self.encoder, self.encoder_spec = load_text_encoder(features_dir)
        self._table = embed_captions(self.encoder, self.encoder_spec, [str(c) for c in load_captions(data_dir, "train")])
        _, y_maps = shard_arrays(data_dir, "train")  # labels only: the images stay on disk
        y = None if y_maps is None or not self.conditional else np.concatenate([np.asarray(m) for m in y_maps])
        self._class_embeddings = class_means(self._table, y,
                                             int(self.manifest["num_classes"]) if self.conditional else 0)  # fmt: skip

    def _spec(self) -> dict[str, Any]:
        if self.encoder_spec is None:
            from gan.text_encoder import load_text_encoder

            load_text_encoder(None)  # raises the sentence that says how to get one
        assert self.encoder_spec is not None
        return self.encoder_spec

    # ---- networks ------------------------------------------------------------------------
    def network_specs(self) -> dict[str, dict[str, Any]]:
        m, s = self.params.model, self.params.model.stackgan
        text = self._spec()
        text_dim = int(text["kwargs"]["text_dim"])
        classes = int(self.manifest["num_classes"]) if self.conditional else 0
        G = {"z_dim": int(m.z_dim), "text_dim": text_dim, "c_dim": int(s.c_dim), "g_width": int(m.g_width), "channels": self.channels,
             "image_size": self.image_size, "stage1_size": self.size1, "n_res": int(s.n_res), "vocab": list(text["vocab"]),
             "embed_dim": int(text["kwargs"]["embed_dim"]), "max_len": int(text["max_len"]), "num_classes": classes}  # fmt: skip
        G1 = {"z_dim": int(m.z_dim), "text_dim": text_dim, "c_dim": int(s.c_dim), "width": int(m.g_width), "channels": self.channels, "size": self.size1}
        G2 = {"text_dim": text_dim, "c_dim": int(s.c_dim), "width": int(m.g_width), "channels": self.channels,
              "in_size": self.size1, "image_size": self.image_size, "n_res": int(s.n_res)}  # fmt: skip
        D = {"channels": self.channels, "width": int(m.d_width), "text_dim": text_dim, "c_dim": int(s.c_dim)}
        return {
            "G": {"network": "stackgan.G", "kwargs": G},
            "G1": {"network": "stackgan.stage1", "kwargs": G1},
            "G2": {"network": "stackgan.stage2", "kwargs": G2},
            "D1": {"network": "stackgan.D", "kwargs": {**D, "image_size": self.size1}},
            "D2": {"network": "stackgan.D", "kwargs": {**D, "image_size": self.image_size}},
        }

    def build_networks(self) -> dict[str, nn.Module]:
        """G with featurize's encoder and the classes' mean caption embeddings; G1, G2 its stages."""
        from gan.models import build_network

        specs = self.network_specs()
        G = build_network("stackgan.G", **specs["G"]["kwargs"])
        G.text.load_state_dict(self.encoder.state_dict())
        with torch.no_grad():
            G.class_embeddings.copy_(self._class_embeddings)
        return {
            "G": G,
            "G1": G.stage1,
            "G2": G.stage2,
            "D1": build_network("stackgan.D", **specs["D1"]["kwargs"]),
            "D2": build_network("stackgan.D", **specs["D2"]["kwargs"]),
        }

    # ---- optimisers, schedule, phases -------------------------------------------------------
    def optimizers(self) -> dict[str, OptimizerSpec]:
        cfg = self.params.train
        betas = (cfg.beta1, cfg.beta2)
        return {
            "G1": OptimizerSpec(("G1",), cfg.lr_G, betas),
            "D1": OptimizerSpec(("D1",), cfg.lr_D, betas, private=True),
            "G2": OptimizerSpec(("G2",), cfg.lr_G, betas),
            "D2": OptimizerSpec(("D2",), cfg.lr_D, betas, private=True),
        }

    def stage(self, step: int) -> int:
        return 1 if step < self.params.train.stackgan.stage1_steps else 2

    def phases(self, step: int) -> list[Phase]:
        if self.stage(step) == 1:
            d, g = Phase("D1main", "D1", self.d1_main, fetch=True, grad_norm="grad_norm/D"), Phase("G1main", "G1", self.g1_main, grad_norm="grad_norm/G")
        else:
            d, g = Phase("D2main", "D2", self.d2_main, fetch=True, grad_norm="grad_norm/D"), Phase("G2main", "G2", self.g2_main, grad_norm="grad_norm/G")
        return [d] * self.params.train.n_critic + [g]

    def lr_scale(self, step: int) -> dict[str, float]:
        """Rates halved every lr_decay_steps within the current stage (the reference halves every 100 epochs)."""
        every = self.params.train.stackgan.lr_decay_steps
        if not every:
            return {}
        first = 0 if self.stage(step) == 1 else self.params.train.stackgan.stage1_steps
        scale = 0.5 ** ((step - first) // every)
        names = ("G1", "D1") if self.stage(step) == 1 else ("G2", "D2")
        return {name: scale for name in names}

    def before_step(self, nets: dict[str, nn.Module], step: int) -> None:
        """The exported generator (and its EMA copy) draws with the stage being trained; a frozen Stage I
        runs in eval mode, so its BatchNorm statistics stay as Stage I left them."""
        stage = self.stage(step)
        for net in nets.values():
            if hasattr(net, "set_stage"):
                net.set_stage(stage)
        nets["G1"].train(stage == 1)

    def batches(self, stream: Iterator[tuple[torch.Tensor, torch.Tensor | None, np.ndarray]]) -> Iterator[Batch]:
        """``{"image", "label", "text"}``: the rows' images, labels and caption embeddings."""
        assert self._table is not None, "use_inputs() first"
        for x, y, rows in stream:
            yield {"image": x, "label": y if self.conditional else None, "text": self._table[torch.from_numpy(rows)]}

    # ---- phase losses ------------------------------------------------------------------------
    def _reals(self, batch: Batch, size: int) -> torch.Tensor:
        x = batch["image"]
        return x if x.shape[-1] == size else F.adaptive_avg_pool2d(x, size)

    def _d_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        real_logits = D(real, emb).float()
        fake_logits = D(fake, emb).float()
        wrong_logits = D(real, mismatched(emb)).float()
        loss = matching_aware_d(self.pair, real_logits, fake_logits, wrong_logits)
        return loss, {"loss/D": loss.detach(), "D(x)": torch.sigmoid(real_logits.detach()).mean(),
                      "D(G(z))": torch.sigmoid(fake_logits.detach()).mean(), "D(x, wrong)": torch.sigmoid(wrong_logits.detach()).mean()}  # fmt: skip

    def _g_loss(self, D: nn.Module, fake: torch.Tensor, emb: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        adv = self.pair.g(D(fake, emb).float())
        kl = conditioning_kl(mu.float(), logvar.float())
        return adv + self.params.train.stackgan.kl_weight * kl, {"loss/G": adv.detach(), "loss/kl": kl.detach()}

    def _z(self, batch: Batch, device: torch.device) -> torch.Tensor:
        return torch.randn(batch["image"].shape[0], int(self.params.model.z_dim), device=device)

    def d1_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        emb = batch["text"]
        fake, _, _ = ctx["G1"](self._z(batch, ctx.device), emb)  # G1 frozen: no graph
        return self._d_loss(ctx["D1"], self._reals(batch, self.size1), fake, emb)

    def g1_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        emb = batch["text"]
        fake, mu, logvar = ctx["G1"](self._z(batch, ctx.device), emb)
        return self._g_loss(ctx["D1"], fake, emb, mu, logvar)

    def _stage2(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb = batch["text"]
        low, _, _ = ctx["G1"](self._z(batch, ctx.device), emb)  # Stage I is frozen in Stage II
        return ctx["G2"](low, emb)

    def d2_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        fake, _, _ = self._stage2(ctx, batch)
        return self._d_loss(ctx["D2"], batch["image"], fake, batch["text"])

    def g2_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        fake, mu, logvar = self._stage2(ctx, batch)
        return self._g_loss(ctx["D2"], fake, batch["text"], mu, logvar)
