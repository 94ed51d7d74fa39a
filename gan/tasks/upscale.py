"""The ``upscale`` task: super-resolution, low-res image -> high-res image (SRGAN / ESRGAN).

    prepare: {source: photos, channels: 3, pairs: {scale: 4, patch_size: 64}}   # params.yaml
    model:   {task: upscale, upscale: {generator: rrdb, blocks: 4, width: 32, pretrain_steps: 1000}}
    train:   {lr_G: 0.0001, lr_D: 0.0001, beta1: 0.9, beta2: 0.99}             # ESRGAN's Adam

Networks: ``G`` (``rrdb.G`` or ``srresnet.G``, :mod:`gan.models.srgan`), ``D``
(``vgg.D`` on the high-resolution patch), ``G_ema`` (EMA of G, the exported ``G``) and
``G_psnr`` (the PSNR-phase generator, exported beside it and scored by evaluation). The
schedule has two phases in one training, as ESRGAN trains RRDB_PSNR and then the GAN
initialised from it (BasicSR's ``train_RRDBNet_PSNR_x4`` then ``train_ESRGAN_x4``):

    steps [0, pretrain_steps)       Gpsnr   L_1 only (optimiser G_psnr); G_psnr follows G_ema
    steps [pretrain_steps, steps)   Dmain   RaGAN D loss on real HR patches vs G(LR) (optimiser D)
                                    Gmain   1e-2 L_1 + 1 L_percep + 5e-3 L_RaGAN (optimiser G: a
                                            fresh Adam, as the reference's GAN run starts one)

Every learning rate halves at each of ``model.upscale.lr_milestones`` steps counted from
the start of its phase (``lr_scale``). The schedule is a pure function of the step, and
G_psnr is a network (checkpointed), so a resume continues exactly in either phase.

The perceptual loss compares feature maps of a frozen network: ESRGAN's is VGG19
(conv5_4, before the activation), whose ImageNet weights this pipeline never downloads.
By default (``perceptual: features``) it is the feature network ``featurize`` trained on
the user's own HR patches (its convolutional trunk, BatchNorm outputs before each
activation); ``perceptual: vgg19`` with ``vgg_weights`` uses torchvision's VGG19 weights
from a file on disk; ``none`` drops the term.

Inference (``gan.inference.upscale``): image -> image, tiled. Primary metric: Y-channel
PSNR of the upscaled validation images (higher is better), beside bicubic and the PSNR
model, with SSIM and a detail-patch sliced Wasserstein distance (:mod:`gan.metrics.super_resolution`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import ConfigError
from gan.losses import (
    d_loss_relativistic_average,
    g_loss_relativistic_average,
    perceptual_loss,
    pixel_loss_l1,
)
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

METRICS = ("psnr", "ssim", "swd", "psnr/psnr_model", "ssim/psnr_model", "swd/psnr_model", "psnr/bicubic", "ssim/bicubic", "swd/bicubic")


class UpscaleTask(Task):
    """low-res image -> high-res image: ESRGAN's L1 pre-training then RaGAN + perceptual; `gan upscale` downstream; primary metric Y-PSNR."""

    name = "upscale"
    inference = "upscale"
    metric = MetricSpec("psnr", lower_is_better=False, names=METRICS,
                        higher_is_better=("ssim", "psnr/psnr_model", "ssim/psnr_model", "psnr/bicubic", "ssim/bicubic"))
    tunable = ("lr_G", "lr_D")
    mutable = ("lr_G", "lr_D", "beta1", "beta2")
    ema = {"G_ema": "G"}
    exported = {"G": "G_ema", "G_psnr": "G_psnr"}
    saturates = True
    channels_last = True

    def __init__(self, params: Any, manifest: dict[str, Any]) -> None:
        super().__init__(params, manifest)
        if manifest.get("kind") != "pairs":
            raise ConfigError("params.yaml: model.task 'upscale' needs super-resolution pairs; set prepare.pairs (scale, patch_size) and re-run prepare.")
        self.cfg = params.model.upscale
        self.scale, self.patch_size, self.channels = int(manifest["scale"]), int(manifest["patch_size"]), int(manifest["channels"])
        if self.patch_size & (self.patch_size - 1):
            raise ConfigError(f"params.yaml: prepare.pairs.patch_size = {self.patch_size} is invalid for model.task 'upscale': D needs a power of two (16, 32, 64, 128).")
        self.data_dir: Any = params.prepare.out
        self._perceptual: nn.Module | None = None
        if self.cfg.perceptual_weight > 0 and self.cfg.perceptual != "none":
            where = self.cfg.features if self.cfg.perceptual == "features" else self.cfg.vgg_weights
            key = "model.upscale.features" if self.cfg.perceptual == "features" else "model.upscale.vgg_weights"
            if not where or not Path(where).exists():
                hint = "run featurize first (dvc repro featurize)" if self.cfg.perceptual == "features" else "point it at VGG19 weights on disk"
                raise ConfigError(f"params.yaml: {key} = {where!r} does not exist; {hint}, or set model.upscale.perceptual: none.")

    # ---- networks and optimisers --------------------------------------------------------
    def G_spec(self) -> dict[str, Any]:
        c = self.cfg
        kwargs: dict[str, Any] = {"channels": self.channels, "scale": self.scale, "width": int(c.width), "blocks": int(c.blocks)}
        if c.generator == "rrdb":
            kwargs["growth"] = int(c.growth)
        return {"network": f"{c.generator}.G", "kwargs": kwargs}

    def network_specs(self) -> dict[str, dict[str, Any]]:
        g = self.G_spec()
        d = {"network": "vgg.D", "kwargs": {"channels": self.channels, "image_size": self.patch_size, "width": int(self.cfg.d_width)}}
        return {"G": g, "G_psnr": g, "D": d}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        t = self.params.train
        betas = (t.beta1, t.beta2)
        # two optimisers over G: the GAN phase starts a fresh Adam, as the reference's second run does
        return {"G_psnr": OptimizerSpec(("G",), t.lr_G, betas), "G": OptimizerSpec(("G",), t.lr_G, betas),
                "D": OptimizerSpec(("D",), t.lr_D, betas)}  # fmt: skip

    # ---- the schedule ---------------------------------------------------------------------
    def in_gan_phase(self, step: int) -> bool:
        return step >= self.cfg.pretrain_steps

    def phases(self, step: int) -> list[Phase]:
        if not self.in_gan_phase(step):
            return [Phase("Gpsnr", "G_psnr", self.g_psnr, fetch=True, grad_norm="grad_norm/G")]
        return [Phase("Dmain", "D", self.d_main, fetch=True, grad_norm="grad_norm/D"), Phase("Gmain", "G", self.g_main, grad_norm="grad_norm/G")]

    def copies(self, step: int) -> dict[str, str]:
        # G_psnr follows G_ema through pre-training and is frozen from the switch on
        return {"G_psnr": "G_ema"} if step <= self.cfg.pretrain_steps and step > 0 else {}

    def lr_scale(self, step: int) -> dict[str, float]:
        """0.5 ** (milestones passed since the current phase began), for that phase's optimisers."""
        into = step - self.cfg.pretrain_steps if self.in_gan_phase(step) else step
        factor = 0.5 ** sum(1 for m in self.cfg.lr_milestones if into >= m)
        return {"G": factor, "D": factor} if self.in_gan_phase(step) else {"G_psnr": factor}

    def batches_per_step(self) -> int:
        return 1

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int) -> Iterator[Batch]:
        from gan.data.shards import paired_batches

        self.data_dir = data_dir
        t = self.params.train
        for lr, hr in paired_batches(data_dir, t.batch_size, rank, world_size, t.seed, consumed):
            yield {"image": hr, "low_res": lr, "label": None}  # [B, C, P, P], [B, C, P/s, P/s]

    def health(self, metrics: Metrics) -> Health:
        if "loss/D" not in metrics:  # pre-training: no game yet; the guard watches L1 alone
            zero = torch.zeros_like(metrics["loss/G"])
            return Health(zero, metrics["loss/G"], zero + 0.5, zero + 0.5)
        return Health(metrics["loss/D"], metrics["loss/G"], metrics["D(x)"], metrics["D(G(z))"])

    # ---- phase losses ---------------------------------------------------------------------
    def g_psnr(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """PSNR-oriented pre-training (RRDB_PSNR): L_1 between G(LR) and HR."""
        with ctx.autocast():
            sr = ctx["G"](ctx.memory_format(batch["low_res"]))  # [B, C, P, P]
        l1 = pixel_loss_l1(sr.float(), batch["image"].float())
        return l1, {"loss/G": l1.detach(), "loss/l1": l1.detach()}

    def d_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """D's RaGAN loss on real HR patches against G's (frozen) upscaling of their LR versions."""
        real = batch["image"]
        with ctx.autocast():
            fake = ctx["G"](ctx.memory_format(batch["low_res"]))
            real_logits, fake_logits = ctx["D"](real).float(), ctx["D"](fake).float()  # [B], [B]
        loss = d_loss_relativistic_average(real_logits, fake_logits)
        return loss, {"loss/D": loss.detach(), "D(x)": torch.sigmoid(real_logits.detach()).mean(),
                      "D(G(z))": torch.sigmoid(fake_logits.detach()).mean()}  # fmt: skip

    def g_main(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """ESRGAN's G loss: l1_weight L_1 + perceptual_weight L_percep + gan_weight L_RaGAN (frozen D)."""
        c, real = self.cfg, batch["image"]
        with ctx.autocast():
            sr = ctx["G"](ctx.memory_format(batch["low_res"]))
            fake_logits = ctx["D"](sr).float()
            with torch.no_grad():
                real_logits = ctx["D"](real).float()  # D's view of the real batch is a constant for G
        sr = sr.float()
        l1 = pixel_loss_l1(sr, real.float())
        gan = g_loss_relativistic_average(real_logits, fake_logits)
        loss = c.l1_weight * l1 + c.gan_weight * gan
        out: Metrics = {"loss/l1": l1.detach(), "loss/gan": gan.detach()}
        percep_net = self.perceptual_net(ctx.device)
        if percep_net is not None:
            with torch.no_grad():
                target = percep_net(real.float())
            percep = perceptual_loss(percep_net(sr), target)
            loss = loss + c.perceptual_weight * percep
            out["loss/percep"] = percep.detach()
        out["loss/G"] = loss.detach()
        return loss, out

    def perceptual_net(self, device: torch.device) -> nn.Module | None:
        """The frozen feature network of the perceptual loss (loaded once, on first use), or None."""
        c = self.cfg
        if c.perceptual_weight == 0 or c.perceptual == "none":
            return None
        if self._perceptual is None:
            self._perceptual = load_perceptual_net(c.perceptual, c.features, c.vgg_weights, self.channels)
        return self._perceptual.to(device)

    # ---- evaluation ---------------------------------------------------------------------
    def evaluate(self, nets: dict[str, nn.Module], feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """Mean Y-PSNR, SSIM and detail SWD over the whole validation images: G (``psnr`` ...), G_psnr and bicubic."""
        from gan.metrics.super_resolution import detail_swd, psnr_y, ssim_y

        self.data_dir = data_dir
        models = {"": nets["G"], "/psnr_model": nets.get("G_psnr"), "/bicubic": None}
        sums: dict[str, float] = {}
        count = 0
        for lr, hr in self._val_images(data_dir):
            count += 1
            for suffix, G in models.items():
                if suffix == "/psnr_model" and G is None:
                    continue
                sr = self.upscale_tensor(G, lr)
                for name, value in (("psnr", psnr_y(sr, hr, self.scale)), ("ssim", ssim_y(sr, hr, self.scale)),
                                    ("swd", detail_swd(sr, hr, seed=settings.seed))):  # fmt: skip
                    sums[name + suffix] = sums.get(name + suffix, 0.0) + value
        return {k: v / max(count, 1) for k, v in sums.items()}

    def real_floor(self, feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """The originals against themselves: SSIM 1 and SWD 0, the best reachable (PSNR's would be infinite: left out)."""
        return {"ssim": 1.0, "swd": 0.0}

    def _val_images(self, data_dir: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from gan.data.shards import val_images

        for lr, hr in val_images(data_dir):
            yield torch.from_numpy(lr), torch.from_numpy(hr)

    @torch.no_grad()
    def upscale_tensor(self, G: nn.Module | None, lr: torch.Tensor) -> torch.Tensor:
        """``lr [1, C, h, w]`` -> ``[1, C, h*s, w*s]`` in [-1, 1] by ``G`` (None: bicubic), on G's device."""
        if G is None:
            return F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(-1, 1)
        device = next(G.parameters()).device
        was_training = G.training
        G.eval()
        out = G(lr.to(device)).clamp(-1, 1).cpu()
        G.train(was_training)
        return out

    def grid(self, nets: dict[str, nn.Module], seed: int = 0) -> tuple[torch.Tensor, int]:
        """Rows of crops: low-res (nearest) | bicubic | PSNR model | GAN model | original, one row per validation image."""
        crop = max(self.patch_size, 16 * self.scale)
        rows = []
        for lr, hr in self._val_images(self.data_dir):
            h, w = hr.shape[-2:]
            size = min(crop, h, w) // self.scale * self.scale
            top, left = (h - size) // 2 // self.scale * self.scale, (w - size) // 2 // self.scale * self.scale
            lr_c = lr[..., top // self.scale : (top + size) // self.scale, left // self.scale : (left + size) // self.scale]
            tiles = [F.interpolate(lr_c, scale_factor=self.scale, mode="nearest"), self.upscale_tensor(None, lr_c),
                     self.upscale_tensor(nets.get("G_psnr"), lr_c) if nets.get("G_psnr") is not None else self.upscale_tensor(None, lr_c),
                     self.upscale_tensor(nets["G"], lr_c), hr[..., top : top + size, left : left + size]]  # fmt: skip
            rows.append(torch.cat(tiles))
            if len(rows) == 4:
                break
        size = min(r.shape[-1] for r in rows)
        return torch.cat([r[..., :size, :size] for r in rows]), 5

    # ---- export ---------------------------------------------------------------------------
    @classmethod
    def variant(cls, spec: dict[str, Any]) -> str:
        return str(spec.get("generator") or spec.get("networks", {}).get("G", {}).get("network") or cls.name)

    @classmethod
    def describe(cls, spec: dict[str, Any]) -> str:
        return (f"x{spec.get('scale', '?')} super-resolution ({cls.variant(spec)} generator), {spec.get('channels', '?')} channels, "
                f"trained on {spec.get('patch_size', '?')} px patches.")

    def export_spec(self) -> dict[str, Any]:
        return {"scale": self.scale, "generator": str(self.cfg.generator), "channels": self.channels, "image_size": self.patch_size, "patch_size": self.patch_size,
                "degradation": self.manifest.get("degradation", {})}  # fmt: skip


class PerceptualNet(nn.Module):
    """A frozen convolutional stack returning the feature maps at ``taps`` (layer indices), in eval mode."""

    def __init__(self, layers: nn.Sequential, taps: list[int], mean: list[float] | None = None, std: list[float] | None = None) -> None:
        super().__init__()
        self.layers, self.taps = layers[: max(taps) + 1], set(taps)
        # VGG expects ImageNet-normalised [0, 1] RGB; the domain network takes [-1, 1] as it is
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) if mean else torch.zeros(1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) if std else torch.ones(1))
        self.imagenet = mean is not None
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualNet:
        return super().train(False)  # BatchNorm statistics never move

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.imagenet:
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


VGG19_CONV5_4 = 34  # torchvision vgg19().features[34]: conv5_4, before its ReLU (ESRGAN's layer)


def load_perceptual_net(kind: str, features_dir: str | os.PathLike, vgg_weights: str | None, channels: int) -> PerceptualNet:
    """``features``: the featurize stage's domain network trunk; ``vgg19``: VGG19 from ``vgg_weights`` on disk."""
    if kind == "vgg19":
        import torchvision

        vgg = torchvision.models.vgg19(weights=None)
        try:
            vgg.load_state_dict(torch.load(str(vgg_weights), map_location="cpu", weights_only=True))
        except Exception as err:
            raise ConfigError(f"params.yaml: model.upscale.vgg_weights = {vgg_weights!r} cannot be loaded as torchvision VGG19 weights ({type(err).__name__}); use the IMAGENET1K_V1 .pth file.") from None
        return PerceptualNet(vgg.features, [VGG19_CONV5_4], mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    from gan.features import load_feature_net

    domain = load_feature_net(features_dir).domain
    if domain.channels != channels:
        raise ConfigError(f"params.yaml: model.upscale.features = {str(features_dir)!r} was trained on {domain.channels}-channel images, the pairs have {channels}; re-run featurize.")
    trunk = domain.trunk
    taps = [i for i, layer in enumerate(trunk) if isinstance(layer, nn.BatchNorm2d)]  # each level, before its activation
    return PerceptualNet(trunk, taps)
