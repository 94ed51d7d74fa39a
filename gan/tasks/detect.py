"""The ``detect`` task: anomaly detection trained on normal images only (GANomaly, f-AnoGAN).

    model.task: detect              # params.yaml; model.detect.method picks ganomaly | fanogan
    prepare.anomaly_classes: ["3"]  # train/val hold normal images only, test/ both (gan.data.prepare)

GANomaly (Akçay et al. 2018): ``G`` is encoder E1 -> decoder -> encoder E2, ``D`` a DCGAN
discriminator. Each step fetches a batch, then

    Gmain   w_adv * ||f(x) - f(G(x))||^2 + w_con * |x - G(x)|_1 + w_enc * ||z - z_hat||^2   (D frozen)
    Dmain   1/2 (BCE(D(x), 1) + BCE(D(G(x)), 0))                                          (G frozen)

and, as the reference does, D is re-initialised when its loss falls below
``model.detect.d_reinit_below`` (a warning in the log, ``reinit/D`` in the metrics, the
count in the checkpoint). Score: ``||z - z_hat||^2``.

f-AnoGAN (Schlegl et al. 2019): WGAN-GP first (``n_critic`` x Dmain with the gradient
penalty, then Gmain), and for the last ``model.detect.encoder_steps`` of ``train.steps``
the izi_f encoder phase Emain with G and D frozen (and in eval mode):
``||x - G(E(x))||^2 + kappa ||f(x) - f(G(E(x)))||^2``. The schedule is a function of the
step, which the checkpoint holds, so a resumed run switches at the same step. Score: the
same combination per image.

Inference (``gan.inference.detect``): image -> score + flag at the threshold chosen on the
normal validation split at ``model.detect.target_fpr`` (:meth:`DetectTask.calibrate`, stored
in the export). Primary metric: AUROC on the test split (higher is better); the PCA
reconstruction baseline is the task's ``real_floor`` (``floor/auroc`` in eval/metrics.json),
and the discriminator-score baseline ``-D(x)`` is reported as ``d_score/auroc``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from gan.errors import ConfigError
from gan.losses import (
    d_loss_minimax,
    d_loss_wasserstein,
    g_loss_wasserstein,
    ganomaly_adversarial_loss,
    ganomaly_contextual_loss,
    ganomaly_encoder_loss,
    gradient_penalty,
    izif_loss,
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

log = logging.getLogger(__name__)

METRICS = ("auroc", "average_precision", "fpr", "tpr", "threshold", "d_score/auroc")
PCA_COMPONENTS = 20  # the PCA-reconstruction baseline's components (the PCA-20 yardstick)


class DetectTask(Task):
    """image -> anomaly score: GANomaly or f-AnoGAN (model.detect.method), trained on normal images only; `gan score` downstream; primary metric AUROC."""

    name = "detect"
    inference = "detect"
    metric = MetricSpec("auroc", lower_is_better=False, names=METRICS, higher_is_better=("average_precision",))
    tunable = ("lr_G", "lr_D")
    mutable = ("lr_G", "lr_D", "beta1", "beta2")
    saturates = False  # GANomaly's D may win outright (the reference re-initialises it); WGAN's critic is unbounded

    def __init__(self, params: Any, manifest: dict[str, Any]) -> None:
        super().__init__(params, manifest)
        self.cfg = params.model.detect
        self.method = self.cfg.method
        if "anomaly" not in manifest:
            raise ConfigError("the prepared data has no normal/anomalous split; set prepare.normal_classes (or anomaly_classes) and re-run prepare.")
        self.channels, self.image_size = int(manifest["channels"]), int(manifest["image_size"])
        self.z_dim = int(params.model.z_dim)
        steps = int(params.train.steps)
        # encoder_steps < steps in every run (train and tune trials): gan.config checks it
        self.gan_steps = steps - self.cfg.encoder_steps if self.method == "fanogan" else steps
        # instance attributes: what is exported depends on the method
        # D travels with both for the discriminator-score baseline (-D(x)); f-AnoGAN's score needs it too
        self.exported = {"G": "G", "D": "D"} if self.method == "ganomaly" else {"G": "G", "D": "D", "E": "E"}
        self.ema = {}
        self.d_reinits = 0  # GANomaly: times D was re-initialised (kept in checkpoints)
        self._last_scores: tuple[np.ndarray, np.ndarray] | None = None  # (normal, anomalous) test scores, for grid()

    # ---- networks and optimisers ------------------------------------------------------
    def network_specs(self) -> dict[str, dict[str, Any]]:
        m = self.params.model
        image = {"channels": self.channels, "image_size": self.image_size}
        if self.method == "ganomaly":
            return {"G": {"network": "ganomaly.G", "kwargs": {**image, "width": int(m.g_width), "z_dim": self.z_dim}},
                    "D": {"network": "ganomaly.D", "kwargs": {**image, "width": int(m.d_width)}}}  # fmt: skip
        return {"G": {"network": "fanogan.G", "kwargs": {**image, "width": int(m.g_width), "z_dim": self.z_dim}},
                "D": {"network": "fanogan.D", "kwargs": {**image, "width": int(m.d_width)}},
                "E": {"network": "fanogan.E", "kwargs": {**image, "width": int(m.d_width), "z_dim": self.z_dim}}}  # fmt: skip

    def optimizers(self) -> dict[str, OptimizerSpec]:
        t = self.params.train
        betas = (t.beta1, t.beta2)
        opts = {"G": OptimizerSpec(("G",), t.lr_G, betas), "D": OptimizerSpec(("D",), t.lr_D, betas)}
        if self.method == "fanogan":
            opts["E"] = OptimizerSpec(("E",), t.lr_G, betas)  # izi_f's encoder: G's learning rate
        return opts

    # ---- the recipe ---------------------------------------------------------------------
    def phases(self, step: int) -> list[Phase]:
        if self.method == "ganomaly":
            # the reference's order: G's update, then D's on the same batch
            return [Phase("Gmain", "G", self.ganomaly_g, fetch=True, grad_norm="grad_norm/G"),
                    Phase("Dmain", "D", self.ganomaly_d, grad_norm="grad_norm/D")]  # fmt: skip
        if step < self.gan_steps:
            critic = [Phase("Dmain", "D", self.wgan_d, fetch=True, grad_norm="grad_norm/D")]
            return critic * self.params.train.n_critic + [Phase("Gmain", "G", self.wgan_g, grad_norm="grad_norm/G")]
        return [Phase("Emain", "E", self.izif_e, fetch=True, grad_norm="grad_norm/E")]

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int) -> Iterator[Batch]:
        from gan.data import ShardedBatches

        cfg = self.params.train
        source = ShardedBatches(data_dir, "train", cfg.batch_size, rank, world_size, cfg.seed)
        source.epoch, skip = divmod(consumed, source.batches_per_epoch)
        stream = iter(source)
        for _ in range(skip):
            next(stream)
        for x, _ in stream:  # [B, C, H, W]: normal images only; labels are not used
            yield {"image": x, "label": None}

    def health(self, metrics: Metrics) -> Health:
        half = torch.full((), 0.5)
        if "loss/E" in metrics:  # f-AnoGAN's encoder phase: G and D are frozen
            return Health(metrics["loss/E"], metrics["loss/E"], half, half)
        return Health(metrics["loss/D"], metrics["loss/G"], metrics.get("D(x)", half), metrics.get("D(G(z))", half))

    def after_step(self, nets: dict[str, nn.Module], metrics: Metrics, step: int) -> Metrics:
        """GANomaly's D re-initialisation when its loss collapses (the reference's ``reinit_d``)."""
        if self.method != "ganomaly" or self.cfg.d_reinit_below <= 0:
            return {}
        loss_D = float(metrics["loss/D"])
        collapsed = loss_D < self.cfg.d_reinit_below
        if collapsed:
            self.d_reinits += 1
            reinitialise(nets["D"], self.network_specs()["D"], seed=self.params.train.seed * 1_000_003 + step)
            log.warning("GANomaly: loss/D = %.3g < %g at step %d; D re-initialised (%d so far), as the reference does.",
                        loss_D, self.cfg.d_reinit_below, step + 1, self.d_reinits)  # fmt: skip
        return {"reinit/D": torch.tensor(float(collapsed))}

    def state_dict(self) -> dict[str, Any]:
        return {"d_reinits": self.d_reinits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.d_reinits = int(state.get("d_reinits", 0))

    # ---- phase losses -------------------------------------------------------------------
    def ganomaly_g(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """GANomaly's generator loss on a real batch ``x [B, C, H, W]``; D is frozen."""
        x = batch["image"]
        x_hat, z, z_hat = ctx["G"](x)  # [B, C, H, W], [B, z], [B, z]
        _, f_real = ctx["D"](x)  # [B, F]
        _, f_fake = ctx["D"](x_hat)
        adv = ganomaly_adversarial_loss(f_real, f_fake)
        con = ganomaly_contextual_loss(x, x_hat)
        enc = ganomaly_encoder_loss(z, z_hat)
        loss = self.cfg.w_adv * adv + self.cfg.w_con * con + self.cfg.w_enc * enc
        return loss, {"loss/G": loss.detach(), "loss/adv": adv.detach(), "loss/con": con.detach(), "loss/enc": enc.detach()}

    def ganomaly_d(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """GANomaly's D: real vs reconstructed, 1/2 (BCE(D(x), 1) + BCE(D(G(x)), 0)); G frozen."""
        x = batch["image"]
        x_hat = ctx["G"](x)[0]  # frozen G: no graph
        real_logits, _ = ctx["D"](x)  # [B]
        fake_logits, _ = ctx["D"](x_hat)
        loss = 0.5 * d_loss_minimax(real_logits, fake_logits)
        return loss, {"loss/D": loss.detach(), "D(x)": torch.sigmoid(real_logits.detach()).mean(),
                      "D(G(z))": torch.sigmoid(fake_logits.detach()).mean()}  # fmt: skip

    def wgan_d(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """f-AnoGAN's critic: WGAN-GP, E[D(G(z))] - E[D(x)] + gp_weight * GP; G frozen."""
        D = ctx["D"]
        real = batch["image"]
        z = torch.randn(real.shape[0], self.z_dim, device=ctx.device)  # [B, z_dim]
        fake = ctx["G"](z)
        real_v, _ = D(real)
        fake_v, _ = D(fake)
        wd = d_loss_wasserstein(real_v, fake_v)
        gp = gradient_penalty(lambda x: D(x)[0], real, fake)
        loss = wd + self.params.train.gp_weight * gp
        return loss, {"loss/D": wd.detach(), "loss/gp": gp.detach()}

    def wgan_g(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """f-AnoGAN's generator: -E[D(G(z))]; D frozen."""
        z = torch.randn(batch["image"].shape[0], self.z_dim, device=ctx.device)
        loss = g_loss_wasserstein(ctx["D"](ctx["G"](z))[0])
        return loss, {"loss/G": loss.detach()}

    def izif_e(self, ctx: PhaseContext, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """f-AnoGAN's izi_f encoder loss; G and D frozen and in eval mode (as at scoring time)."""
        x = batch["image"]
        G, D = ctx["G"], ctx["D"]
        with eval_mode(G, D):
            x_hat = G(ctx["E"](x))  # [B, C, H, W]
            _, f_real = D(x)
            _, f_fake = D(x_hat)
        loss = izif_loss(x, x_hat, f_real, f_fake, self.cfg.kappa)
        return loss, {"loss/E": loss.detach()}

    # ---- export, calibration, evaluation -------------------------------------------------
    @classmethod
    def variant(cls, spec: dict[str, Any]) -> str:
        return str(spec.get("method") or cls.name)

    @classmethod
    def describe(cls, spec: dict[str, Any]) -> str:
        normal = ", ".join(map(str, spec.get("normal_classes", []))) or "?"
        return f"{cls.variant(spec)} anomaly detector, {cls.shape_text(spec)}, normal classes {normal}."

    def export_spec(self) -> dict[str, Any]:
        a = self.manifest["anomaly"]
        return {
            "method": self.method,
            "kappa": float(self.cfg.kappa),
            "z_dim": self.z_dim,
            "num_classes": 0,
            "class_names": [],
            "channels": self.channels,
            "image_size": self.image_size,
            "normal_classes": list(a["normal_classes"]),
            "anomaly_classes": list(a["anomaly_classes"]),
        }

    def calibrate(self, nets: dict[str, nn.Module], data_dir: Any) -> dict[str, Any]:
        """The threshold at ``model.detect.target_fpr`` on the normal validation split, for the export."""
        val = self.split_scores(nets, data_dir, "val")[0]
        threshold = threshold_at_fpr(val, self.cfg.target_fpr)
        return {"threshold": threshold, "target_fpr": float(self.cfg.target_fpr), "val_fpr": float((val > threshold).mean()),
                "val_images": int(len(val))}  # fmt: skip

    def split_scores(self, nets: dict[str, nn.Module], data_dir: Any, split: str, batch_size: int = 500,
                     discriminator: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``(scores [N], labels [N])`` of the exported networks on ``split`` (``discriminator``: the -D(x) baseline's)."""
        from gan.data import load_split
        from gan.inference.detect import anomaly_scores, discriminator_scores

        x, y = load_split(data_dir, split)
        spec = {"method": self.method, "kappa": float(self.cfg.kappa)}
        scores = []
        for i in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.array(x[i : i + batch_size], dtype=np.float32))  # [B, C, H, W]
            scores.append(discriminator_scores(nets, batch) if discriminator else anomaly_scores(nets, spec, batch))
        return torch.cat(scores).numpy().astype(np.float64), np.asarray(y if y is not None else np.zeros(len(x), np.int64))

    def evaluate(self, nets: dict[str, nn.Module], feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """AUROC, average precision, FPR/TPR at the validation threshold, per anomaly class; on the test split."""
        val = self.split_scores(nets, data_dir, "val", settings.batch_size)[0]
        scores, y = self.split_scores(nets, data_dir, "test", settings.batch_size)
        out = detection_metrics(val, scores, y, self.manifest["anomaly"], self.cfg.target_fpr)
        anomalous = np.isin(y, self.manifest["anomaly"]["anomaly_labels"])
        self._last_scores = (scores[~anomalous], scores[anomalous])
        if "D" in nets:  # the discriminator-score baseline beside the method's own score
            from sklearn.metrics import average_precision_score, roc_auc_score

            d_scores = self.split_scores(nets, data_dir, "test", settings.batch_size, discriminator=True)[0]
            out["d_score/auroc"] = float(roc_auc_score(anomalous, d_scores))
            out["d_score/average_precision"] = float(average_precision_score(anomalous, d_scores))
        return out

    def real_floor(self, feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """The PCA-reconstruction baseline (PCA-20 fitted on the normal training images), measured the same way."""
        from gan.data import load_split

        train_x = np.asarray(load_split(data_dir, "train")[0]).reshape(-1, self.channels * self.image_size**2)
        val = pca_scores(train_x, np.asarray(load_split(data_dir, "val")[0]), PCA_COMPONENTS)
        test_x, y = load_split(data_dir, "test")
        return detection_metrics(val, pca_scores(train_x, np.asarray(test_x), PCA_COMPONENTS), np.asarray(y), self.manifest["anomaly"],
                                 self.cfg.target_fpr)  # fmt: skip

    def grid(self, nets: dict[str, nn.Module], seed: int = 0) -> tuple[torch.Tensor, int]:
        """The score histogram of normal vs anomalous test images after :meth:`evaluate`; before it, G's images."""
        if self._last_scores is not None:
            return histogram_image(*self._last_scores), 1
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(16, self.z_dim, generator=g)
        G = nets["G"]
        with torch.no_grad(), eval_mode(G):
            images = G.decoder(z[:, :, None, None]) if self.method == "ganomaly" else G(z)
        return images, 4


# ---- helpers (pure) ---------------------------------------------------------------------


class eval_mode:
    """Context: ``modules`` in eval mode (BatchNorm's running statistics), their modes restored after."""

    def __init__(self, *modules: nn.Module) -> None:
        self.modules = modules
        self.was: list[bool] = []

    def __enter__(self) -> None:
        self.was = [m.training for m in self.modules]
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc: object) -> None:
        for m, was in zip(self.modules, self.was, strict=True):
            m.train(was)


def reinitialise(net: nn.Module, spec: dict[str, Any], seed: int) -> None:
    """Load fresh initial weights into ``net`` from a seeded RNG of its own (the same on every rank)."""
    from gan.models import build_network

    with torch.random.fork_rng(devices=[]):  # the training RNG stream is left untouched
        torch.manual_seed(seed)
        fresh = build_network(spec["network"], **spec["kwargs"])
    net.load_state_dict(fresh.state_dict())


def threshold_at_fpr(normal_scores: np.ndarray, target_fpr: float) -> float:
    """The score above which ``target_fpr`` of ``normal_scores`` lie (the (1 - fpr) quantile, 'higher' rule)."""
    return float(np.quantile(np.asarray(normal_scores, np.float64), 1.0 - target_fpr, method="higher"))


def detection_metrics(val_scores: np.ndarray, scores: np.ndarray, y: np.ndarray, anomaly: dict[str, Any], target_fpr: float) -> dict[str, float]:
    """AUROC, average precision (scikit-learn), FPR/TPR at the threshold from ``val_scores``, AUROC per anomaly class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    anomalous = np.isin(y, anomaly["anomaly_labels"])
    threshold = threshold_at_fpr(val_scores, target_fpr)
    flagged = scores > threshold
    out = {
        "auroc": float(roc_auc_score(anomalous, scores)),
        "average_precision": float(average_precision_score(anomalous, scores)),
        "threshold": threshold,
        "fpr": float(flagged[~anomalous].mean()),
        "tpr": float(flagged[anomalous].mean()),
        "test_normal": float((~anomalous).sum()),
        "test_anomalous": float(anomalous.sum()),
    }
    normal = ~anomalous
    for label, name in zip(anomaly["anomaly_labels"], anomaly["anomaly_classes"], strict=True):
        mine = y == label
        if len(anomaly["anomaly_labels"]) > 1 and mine.any():
            keep = normal | mine
            out[f"auroc/{name}"] = float(roc_auc_score(mine[keep], scores[keep]))
    return out


def pca_scores(train_x: np.ndarray, x: np.ndarray, components: int) -> np.ndarray:
    """Reconstruction error ``||x - PCA^-1(PCA(x))||^2`` per image, PCA fitted on ``train_x [N, D]``."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(components, *train_x.shape), random_state=0).fit(train_x.reshape(len(train_x), -1))
    flat = x.reshape(len(x), -1)
    return ((flat - pca.inverse_transform(pca.transform(flat))) ** 2).mean(axis=1)


def histogram_image(normal: np.ndarray, anomalous: np.ndarray) -> torch.Tensor:
    """A matplotlib histogram of both score sets as one RGB image ``[1, 3, H, W]`` in [-1, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    bins = np.histogram_bin_edges(np.concatenate([normal, anomalous]), bins=40)
    ax.hist(normal, bins=bins, alpha=0.6, density=True, label=f"normal ({len(normal)})")
    ax.hist(anomalous, bins=bins, alpha=0.6, density=True, label=f"anomalous ({len(anomalous)})")
    ax.set(xlabel="anomaly score", ylabel="density", title="test split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float32)  # [H, W, 3]
    plt.close(fig)
    return torch.from_numpy(rgb / 127.5 - 1.0).permute(2, 0, 1)[None]
