"""The ``generate`` task: images from noise (and a class), G against D.

    model.task: generate     # params.yaml; model.arch picks mlp | dcgan | resnet, model.loss the loss

Networks ``G`` and ``D`` (:mod:`gan.models`), ``G_ema`` an EMA copy of G and the
exported generator. Each training step is ``n_critic`` times (fetch a batch, ``Dmain``,
``Dreg`` every ``r1_interval`` D steps when R1 is on), then ``Gmain``:

    Dmain   D learns real vs fake: model.loss's D term (+ gp_weight * GP for wgan-gp,
            + InfoGAN's mutual information on Q)
    Dreg    lazy R1 (Mescheder et al. 2018; Karras et al. 2020): gamma / 2 * k * E||grad D(x)||^2
    Gmain   G learns to fool a frozen D: model.loss's G term (+ InfoGAN's mutual information)

With ``model.arch: stylegan2`` the phases are StyleGAN2-ADA's (Dmain, Dreg, Gmain, Greg:
lazy R1 and path-length regularisation, style mixing, adaptive augmentation), declared
by :class:`gan.tasks.stylegan2.StyleGAN2Recipe`. With ``model.arch: progan`` the phases are
these, and :class:`gan.tasks.progan.ProGANSchedule` grows the networks before each step
(level of detail and fade-in from the images shown), shows D real images at the same
level of detail, and adds ProGAN's drift term to D's loss.

Inference (``gan.inference.generate``): noise + class -> image, through
:func:`gan.sampling.sample`. Primary metric: FID in the domain feature space (lower is
better); tune searches lr_G and lr_D.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from gan.errors import ConfigError
from gan.losses import gradient_penalty, infogan_mi_loss, loss_spec, r1_penalty
from gan.models import model_kwargs
from gan.tasks.base import (
    Batch,
    EvalSettings,
    Health,
    Metrics,
    MetricSpec,
    OptimizerSpec,
    Phase,
    PhaseContext,
    Task,
)

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage", "mode_coverage", "conditional_accuracy")


class GenerateTask(Task):
    """noise (+ class) -> image: G vs D, G_ema exported; `gan augment` downstream; primary metric FID."""

    name = "generate"
    inference = "generate"
    metric = MetricSpec("fid", lower_is_better=True, names=METRICS)
    tunable = ("lr_G", "lr_D")
    mutable = ("lr_G", "lr_D", "beta1", "beta2", "n_critic")
    ema = {"G_ema": "G"}
    exported = {"G": "G_ema"}
    audited = {"D": "D"}

    def __init__(self, params: Any, manifest: dict[str, Any]) -> None:
        super().__init__(params, manifest)
        self.loss_pair = loss_spec(params.model.loss)
        # StackGAN conditions on captions through featurize's text encoder (gan.tasks.stackgan)
        self.stackgan = None
        if params.model.arch == "stackgan":
            from gan.tasks.stackgan import StackGANRecipe

            if params.model.conditional and not manifest["num_classes"]:
                raise ConfigError("params.yaml: model.conditional is true but the prepared data has no labels; set model.conditional: false or use labelled data.")
            self.stackgan = StackGANRecipe(params, manifest, bool(params.model.conditional), self.loss_pair)
            self.audited = {}  # no single D to audit: D1 and D2 judge (image, caption) pairs
        # raises ConfigError naming the key when the model section cannot fit the data
        self.G_kwargs, self.D_kwargs = self._model_kwargs(params, manifest)
        if params.train.privacy.enabled and params.model.arch == "dcgan" and not self.D_kwargs["spectral_norm"]:
            self.D_kwargs["norm"] = "group"  # DP-SGD needs per-sample gradients: no BatchNorm in D
        info = params.model.infogan
        self.c_categorical, self.c_continuous = int(info.categorical), int(info.continuous)
        self.c_dim = self.c_categorical + self.c_continuous
        self.info_weight = float(info.weight) if self.c_dim else 0.0
        self.z_dim = int(self.G_kwargs["z_dim"])
        self.conditional = bool(self.G_kwargs["num_classes"])
        # StyleGAN2-ADA brings its own phases, optimiser settings and state (gan.tasks.stylegan2)
        self.stylegan2 = None
        if params.model.arch == "stylegan2":
            from gan.tasks.stylegan2 import StyleGAN2Recipe

            self.stylegan2 = StyleGAN2Recipe(params, int(manifest["image_size"]), self.conditional, self.loss_pair)
        self.progan = None
        if params.model.arch == "progan":
            from gan.tasks.progan import ProGANSchedule

            self.progan = ProGANSchedule(params, int(manifest["image_size"]))

    def _model_kwargs(self, params: Any, manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """G's and D's kwargs (StackGAN's G kwargs come with the text encoder: see :meth:`network_specs`)."""
        if self.stackgan is not None:
            classes = int(manifest["num_classes"]) if params.model.conditional else 0
            # the exported G's latent: noise + both conditioning-augmentation draws (gan.models.stackgan)
            return {"z_dim": int(params.model.z_dim + 2 * params.model.stackgan.c_dim), "num_classes": classes}, {}
        return model_kwargs(params.model, manifest["channels"], manifest["image_size"], manifest["num_classes"])

    @property
    def saturates(self) -> bool:  # type: ignore[override]
        return self.loss_pair.bounded

    @property
    def channels_last(self) -> bool:  # type: ignore[override]
        return self.params.model.arch != "mlp"

    def grid(self, nets: dict[str, torch.nn.Module], seed: int = 0) -> tuple[torch.Tensor, int]:
        """One row per class (a conditional G), else a square-ish grid; see :func:`gan.grid.sample_grid`."""
        from gan.grid import sample_grid

        return sample_grid(nets["G"], seed=seed)

    def evaluate(self, nets: dict[str, torch.nn.Module], feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """FID, KID, precision/recall, density/coverage (+ class metrics) of G against the validation split."""
        from gan.data import load_split
        from gan.evaluation import evaluate_generator

        val_x, val_y = load_split(data_dir, "val")
        scores = evaluate_generator(nets["G"], feature_net, val_x, val_y, settings.num_samples, seed=settings.seed,
                                    batch_size=settings.batch_size, nearest_k=settings.nearest_k,
                                    kid_subset_size=settings.kid_subset_size)  # fmt: skip
        return {k: float(v) for k, v in scores.items() if isinstance(v, int | float)}

    def real_floor(self, feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """The training split in G's place, measured against the validation split the same way."""
        from gan.data import load_split
        from gan.evaluation import real_floor

        train_x, train_y = load_split(data_dir, "train")
        val_x, val_y = load_split(data_dir, "val")
        return real_floor(feature_net, train_x, train_y, val_x, val_y, num_samples=settings.num_samples, seed=settings.seed,
                          batch_size=settings.batch_size, nearest_k=settings.nearest_k, kid_subset_size=settings.kid_subset_size)  # fmt: skip

    # ---- networks and optimisers ------------------------------------------------------
    def use_inputs(self, data_dir: Any, features_dir: Any) -> None:
        """StackGAN reads featurize's text encoder and the training captions; nothing for the others."""
        if self.stackgan is not None:
            self.stackgan.use_inputs(data_dir, features_dir)

    def network_specs(self) -> dict[str, dict[str, Any]]:
        if self.stackgan is not None:
            return self.stackgan.network_specs()
        arch = self.params.model.arch
        return {"G": {"network": f"{arch}.G", "kwargs": self.G_kwargs}, "D": {"network": f"{arch}.D", "kwargs": self.D_kwargs}}

    def build_networks(self) -> dict[str, torch.nn.Module]:
        if self.stackgan is not None:
            return self.stackgan.build_networks()
        return super().build_networks()

    def optimizers(self) -> dict[str, OptimizerSpec]:
        if self.stackgan is not None:
            return self.stackgan.optimizers()
        if self.stylegan2 is not None:
            self.stylegan2.params = self.params  # PBT may have changed them
            return self.stylegan2.optimizers()
        cfg = self.params.train
        betas = (cfg.beta1, cfg.beta2)
        # D alone reads real images: under train.privacy it is the one trained with DP-SGD
        return {"G": OptimizerSpec(("G",), cfg.lr_G, betas), "D": OptimizerSpec(("D",), cfg.lr_D, betas, private=True)}

    # ---- the recipe ---------------------------------------------------------------------
    def phases(self, step: int) -> list[Phase]:
        if self.stackgan is not None:
            self.stackgan.params = self.params
            return self.stackgan.phases(step)
        if self.stylegan2 is not None:
            self.stylegan2.params = self.params
            return self.stylegan2.phases()
        cfg = self.params.train
        d_phases = [Phase("Dmain", "D", self.d_main, fetch=True, grad_norm="grad_norm/D")]
        if cfg.r1_gamma > 0:
            d_phases.append(Phase("Dreg", "D", self.d_reg, every=cfg.r1_interval))
        return d_phases * cfg.n_critic + [Phase("Gmain", "G", self.g_main, grad_norm="grad_norm/G")]

    def lr_scale(self, step: int) -> dict[str, float]:
        """StackGAN's rates halved on a schedule; none for the others."""
        return self.stackgan.lr_scale(step) if self.stackgan is not None else {}

    def before_step(self, nets: dict[str, torch.nn.Module], step: int) -> None:
        """ProGAN: grow G, D and G_ema to the level of detail of ``step``; StackGAN: the stage G draws with."""
        if self.stackgan is not None:
            self.stackgan.before_step(nets, step)
        if self.progan is not None:
            self.progan.params = self.params
            self.progan.apply(nets, step)

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int) -> Iterator[Batch]:
        from gan.data import ShardedBatches

        cfg = self.params.train
        source = ShardedBatches(data_dir, "train", cfg.batch_size, rank, world_size, cfg.seed, rows=self.stackgan is not None)
        # restart at the epoch holding the position and skip what it already gave
        source.epoch, skip = divmod(consumed, source.batches_per_epoch)
        stream = iter(source)
        for _ in range(skip):
            next(stream)
        if self.stackgan is not None:  # the rows' caption embeddings too
            yield from self.stackgan.batches(stream)
        for x, y in stream:  # [B, C, H, W], [B] | None
            yield {"image": x, "label": y if self.conditional else None}

    def health(self, metrics: Metrics) -> Health:
        return Health(metrics["loss/D"], metrics["loss/G"], metrics["D(x)"], metrics["D(G(z))"])

    def state_dict(self) -> dict[str, Any]:
        """StyleGAN2's path-length mean, ADA's p and the images shown; ProGAN's growth; nothing for the others."""
        if self.progan is not None:
            return self.progan.state_dict()
        return self.stylegan2.state_dict() if self.stylegan2 is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.stylegan2 is not None:
            self.stylegan2.load_state_dict(state)

    @classmethod
    def augments(cls, spec: dict[str, Any]) -> bool:
        """A class-conditional generator makes labelled samples; an unconditional one makes none to train a classifier on."""
        return int(spec.get("num_classes") or 0) > 0

    @classmethod
    def describe(cls, spec: dict[str, Any]) -> str:
        return f"{cls.variant(spec)} generator, {cls.shape_text(spec)}, {int(spec.get('num_classes') or 0)} classes."

    def export_spec(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "arch": self.params.model.arch,
            "G_kwargs": self.network_specs()["G"]["kwargs"] if self.stackgan is not None else self.G_kwargs,
            "z_dim": self.z_dim,
            "num_classes": int(self.G_kwargs["num_classes"]),
            "class_names": list(m.get("class_names", [])) if self.conditional else [],
            "channels": int(m["channels"]),
            "image_size": int(m["image_size"]),
        }

    # ---- phase losses -------------------------------------------------------------------
    def reals(self, batch: Batch) -> torch.Tensor:
        """The batch's real images as D sees them: at ProGAN's current level of detail, else as they are."""
        if self.progan is None:
            return batch["image"]
        from gan.tasks.progan import fade_reals

        return fade_reals(batch["image"], self.progan.current)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment (Zhao et al. 2020) on real and fake alike; identity when off."""
        policy = self.params.train.diffaugment
        if not policy:
            return x
        from gan.diffaugment import diff_augment

        return diff_augment(x, policy)

    def d_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """D on ``real [B, C, H, W]`` against fresh fakes; G is frozen, so fakes carry no graph."""
        G, D = ctx["G"], ctx["D"]
        real, y = self.reals(batch), batch["label"]
        z = torch.randn(real.shape[0], self.z_dim, device=ctx.device)  # [B, z_dim]
        with ctx.autocast():
            fake = ctx.memory_format(G(z, y))  # [B, C, H, W]
        real_in = self.augment(real)
        fake_in = self.augment(fake.float() if ctx.amp_dtype else fake)
        with ctx.autocast():
            real_logits = D(real_in, y)  # [B]
            fake_out = D(fake_in, y, return_q=True) if self.c_dim else D(fake_in, y)
        fake_logits, q = fake_out if self.c_dim else (fake_out, None)
        real_logits, fake_logits = real_logits.float(), fake_logits.float()
        loss = self.loss_pair.d(real_logits, fake_logits)
        out: Metrics = {"loss/D": loss.detach()}  # the adversarial term; regularisers are logged on their own
        if self.loss_pair.gradient_penalty and self.params.train.gp_weight > 0:
            # the penalty's forward runs through D's wrapper too: its gradients are all-reduced with the rest
            with ctx.autocast():
                gp = gradient_penalty(D, real_in.detach(), fake_in.detach(), y)
            loss = loss + self.params.train.gp_weight * gp.float()
            out["loss/gp"] = gp.detach().float()
        if self.c_dim:
            # Q (on D's features) learns to recover the codes G was given
            mi = infogan_mi_loss(q.float(), z[:, -self.c_dim :], self.c_categorical, self.c_continuous)
            loss = loss + self.info_weight * mi
        if self.progan is not None:
            from gan.tasks.progan import drift_penalty

            drift = drift_penalty(real_logits)
            loss = loss + self.params.train.progan.drift * drift
            out.update({"loss/drift": drift.detach(), **self.progan.metrics(ctx.device)})
        out["D(x)"] = torch.sigmoid(real_logits.detach()).mean()
        out["D(G(z))"] = torch.sigmoid(fake_logits.detach()).mean()
        return loss, out

    def d_reg(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Lazy R1 on the current real batch, weighted by the interval (Karras et al. 2020)."""
        cfg = self.params.train
        real_in = self.augment(self.reals(batch)).detach().requires_grad_(True)
        with ctx.autocast():
            out_D = ctx["D"](real_in, batch["label"], return_q=True) if self.c_dim else ctx["D"](real_in, batch["label"])
        real_logits, q = out_D if self.c_dim else (out_D, None)
        r1 = r1_penalty(real_logits.float(), real_in)
        # DDP all-reduces every parameter of the wrapped D, but the input gradient does not
        # depend on the last layer's bias or InfoGAN's Q head: they join with a zero weight
        # (stylegan2-ada's Dreg does the same: `real_logits * 0 + loss_Dr1`)
        loss = 0.5 * cfg.r1_gamma * cfg.r1_interval * r1 + 0.0 * real_logits.float().sum()
        if q is not None:
            loss = loss + 0.0 * q.float().sum()
        return loss, {"loss/r1": r1.detach()}

    def g_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """G through a frozen D, on the labels and batch size of the last real batch."""
        G, D = ctx["G"], ctx["D"]
        y = batch["label"]
        z = torch.randn(batch["image"].shape[0], self.z_dim, device=ctx.device)  # [B, z_dim]
        with ctx.autocast():
            fake = ctx.memory_format(G(z, y))  # [B, C, H, W]
            out_D = D(self.augment(fake), y, return_q=True) if self.c_dim else D(self.augment(fake), y)
        logits, q = out_D if self.c_dim else (out_D, None)
        loss = self.loss_pair.g(logits.float())
        out: Metrics = {"loss/G": loss.detach()}  # the adversarial term; loss/mi on its own
        if self.c_dim:
            mi = infogan_mi_loss(q.float(), z[:, -self.c_dim :], self.c_categorical, self.c_continuous)
            loss = loss + self.info_weight * mi
            out["loss/mi"] = mi.detach()
        return loss, out
