"""The model zoo: G and D for each architecture, built from plain keyword arguments.

    from gan.models import build_G, build_D, model_kwargs
    G_kwargs, D_kwargs = model_kwargs(params.model, channels=1, image_size=16, num_classes=10)
    G, D = build_G("dcgan", **G_kwargs), build_D("dcgan", **D_kwargs)
    x = G(torch.randn(8, G.z_dim), torch.randint(0, 10, (8,)))   # [8, 1, 16, 16] in [-1, 1]
    logits = D(x, y)                                              # [8]

``G_kwargs`` is JSON-able and is all an exported generator needs: ``config.json``
stores ``arch`` and ``G_kwargs`` and ``build_G(arch, **G_kwargs)`` rebuilds G for
``load_state_dict(strict=True)``. ``gan models`` prints :func:`describe`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from gan.errors import ConfigError
from gan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from gan.models.detect import (
    FAnoGANCritic,
    FAnoGANEncoder,
    FAnoGANGenerator,
    GanomalyDiscriminator,
    GanomalyGenerator,
)
from gan.models.mlp import MLPDiscriminator, MLPGenerator
from gan.models.progan import ProGANDiscriminator, ProGANGenerator
from gan.models.resnet import ResNetDiscriminator, ResNetGenerator
from gan.models.srgan import RRDBNet, SRResNet, VGGStyleDiscriminator
from gan.models.stackgan import (
    StackGANDiscriminator,
    StackGANGenerator,
    StackGANStage1,
    StackGANStage2,
)
from gan.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from gan.models.translate import (
    CycleGANGenerator,
    PatchGANDiscriminator,
    StarGANDiscriminator,
    StarGANGenerator,
    UNetGenerator,
)

if TYPE_CHECKING:
    from gan.config import ModelConfig

GENERATORS: dict[str, type[nn.Module]] = {
    "mlp": MLPGenerator,
    "dcgan": DCGANGenerator,
    "resnet": ResNetGenerator,
    "stylegan2": StyleGAN2Generator,
    "progan": ProGANGenerator,
    "stackgan": StackGANGenerator,  # its kwargs come with featurize's text encoder (gan.tasks.stackgan)
}
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "mlp": MLPDiscriminator,
    "dcgan": DCGANDiscriminator,
    "resnet": ResNetDiscriminator,
    "stylegan2": StyleGAN2Discriminator,
    "progan": ProGANDiscriminator,
    "stackgan": StackGANDiscriminator,
}
# Every network a task may build or an exported model may hold, by a stable key
# ("<arch>.<role>"): exported config.json files name their networks with these keys, so
# a key never changes meaning once released.
NETWORKS: dict[str, type[nn.Module]] = {
    **{f"{arch}.G": cls for arch, cls in GENERATORS.items()},
    **{f"{arch}.D": cls for arch, cls in DISCRIMINATORS.items()},
    # the translate task's networks (gan/models/translate.py)
    "cyclegan.G": CycleGANGenerator,
    "patchgan.D": PatchGANDiscriminator,
    "unet.G": UNetGenerator,
    "stargan.G": StarGANGenerator,
    "stargan.D": StarGANDiscriminator,
    # the detect task's networks (gan.tasks.detect)
    "ganomaly.G": GanomalyGenerator,
    "ganomaly.D": GanomalyDiscriminator,
    "fanogan.G": FAnoGANGenerator,
    "fanogan.D": FAnoGANCritic,
    "fanogan.E": FAnoGANEncoder,
    # super-resolution (the upscale task): low-res image -> high-res image, D on HR patches
    "rrdb.G": RRDBNet,
    "srresnet.G": SRResNet,
    "vgg.D": VGGStyleDiscriminator,
    # text-to-image StackGAN: the exported composite, its two trainable stages, and the D of each
    "stackgan.G": StackGANGenerator,
    "stackgan.stage1": StackGANStage1,
    "stackgan.stage2": StackGANStage2,
    "stackgan.D": StackGANDiscriminator,
}
# Architectures whose D is always spectral-normalised (SNGAN's design).
ALWAYS_SPECTRAL_D = ("resnet",)
# Architectures built from equalised-learning-rate layers (gan.models.equalized): no
# spectral norm, no InfoGAN head (gan.config's rules refuse both; its copy of this list is
# checked against this one, since the exported model code may not import the config).
EQUALIZED_ARCHS = ("stylegan2", "progan")

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "build_D",
    "NETWORKS",
    "build_G",
    "build_network",
    "describe",
    "model_kwargs",
]


def _lookup(table: dict[str, type[nn.Module]], arch: str, what: str) -> type[nn.Module]:
    if arch not in table:
        raise ValueError(f"unknown {what} architecture '{arch}'; known: {', '.join(table)}")
    return table[arch]


def build_network(key: str, **kwargs: Any) -> nn.Module:
    """The network registered under ``key`` (``dcgan.G``, ``resnet.D``, ...) built from ``kwargs``."""
    if key not in NETWORKS:
        raise ValueError(f"unknown network '{key}'; known: {', '.join(NETWORKS)}")
    return NETWORKS[key](**kwargs)


def build_G(arch: str, **G_kwargs: Any) -> nn.Module:
    """The generator of ``arch`` (mlp | dcgan | resnet | stylegan2 | progan) built from ``G_kwargs``."""
    return _lookup(GENERATORS, arch, "generator")(**G_kwargs)


def build_D(arch: str, **D_kwargs: Any) -> nn.Module:
    """The discriminator of ``arch`` (mlp | dcgan | resnet | stylegan2 | progan) built from ``D_kwargs``."""
    return _lookup(DISCRIMINATORS, arch, "discriminator")(**D_kwargs)


def model_kwargs(model_cfg: ModelConfig, channels: int, image_size: int, num_classes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(G_kwargs, D_kwargs)`` for the model section of params.yaml and the data.

    ``model_cfg`` is a :class:`gan.config.ModelConfig`; ``num_classes`` is the data set's
    (from its manifest, 0 when unlabelled); the models are conditional
    on it only when ``model.conditional`` is true. ``G_kwargs["z_dim"]`` is
    ``model.z_dim`` plus the InfoGAN codes, which occupy the last entries of z.
    Raises :class:`gan.errors.ConfigError` when the config cannot fit the data.
    """
    arch = model_cfg.arch
    if arch == "stackgan":
        raise ConfigError("model.arch 'stackgan' is built by the generate task from featurize's text encoder (gan.tasks.stackgan), not from model_kwargs.")
    if arch not in GENERATORS:
        raise ConfigError(f"params.yaml: model.arch = {arch!r} is invalid: allowed values are {', '.join(GENERATORS)}.")
    if model_cfg.conditional and num_classes < 1:
        raise ConfigError("params.yaml: model.conditional is true but the prepared data has no labels; set model.conditional: false or use labelled data.")
    info = model_cfg.infogan  # categorical != 1, and no codes for the equalised architectures: gan.config checks
    classes = int(num_classes) if model_cfg.conditional else 0
    if arch in EQUALIZED_ARCHS:
        return _equalized_kwargs(model_cfg, channels, image_size, classes)
    G_kwargs: dict[str, Any] = {
        "z_dim": int(model_cfg.z_dim + info.categorical + info.continuous),
        "width": int(model_cfg.g_width),
        "num_classes": classes,
        "c_categorical": int(info.categorical),
        "c_continuous": int(info.continuous),
        "spectral_norm": bool(model_cfg.spectral_norm_G),
    }
    D_kwargs: dict[str, Any] = {
        "width": int(model_cfg.d_width),
        "num_classes": classes,
        "q_categorical": int(info.categorical),
        "q_continuous": int(info.continuous),
        "spectral_norm": bool(model_cfg.spectral_norm_D or arch in ALWAYS_SPECTRAL_D),
    }
    if arch == "dcgan":
        G_kwargs["upsample"] = model_cfg.g_upsample
    if arch == "mlp":
        G_kwargs["out_shape"] = [int(channels), int(image_size), int(image_size)]
        D_kwargs["in_shape"] = [int(channels), int(image_size), int(image_size)]
    else:
        for kwargs in (G_kwargs, D_kwargs):
            kwargs["channels"], kwargs["image_size"] = int(channels), int(image_size)
    return G_kwargs, D_kwargs


def _equalized_kwargs(model_cfg: ModelConfig, channels: int, image_size: int, classes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """StyleGAN2's and ProGAN's kwargs: no InfoGAN codes or spectral norm (equalised lr takes its place)."""
    # gan.config refuses InfoGAN codes and spectral norm for these architectures
    sg = model_cfg.stylegan2
    size = {"channels": int(channels), "image_size": int(image_size), "num_classes": classes}
    G_kwargs: dict[str, Any] = {"z_dim": int(model_cfg.z_dim), "width": int(model_cfg.g_width), **size}
    D_kwargs: dict[str, Any] = {"width": int(model_cfg.d_width), "mbstd_group": int(sg.mbstd_group), **size}
    if model_cfg.arch == "stylegan2":
        G_kwargs.update(w_dim=int(sg.w_dim), mapping_layers=int(sg.mapping_layers))
    return G_kwargs, D_kwargs


def describe() -> str:
    """A human-readable list of architectures, losses and regularisers (``gan models``)."""
    return _DESCRIPTION


_DESCRIPTION = """\
Architectures (model.arch); every one is unconditional or class-conditional (model.conditional)
  mlp     fully connected GAN (Goodfellow et al. 2014); any output shape, also 2-D points
          conditional: one-hot label joined to z (Mirza & Osindero 2014), projection D
  dcgan   transposed convs + BatchNorm in G, strided convs + LeakyReLU in D (Radford et al. 2015)
          conditional: conditional BatchNorm in G, projection D (Miyato & Koyama 2018)
  resnet  SNGAN residual G and D, spectral normalisation always on in D (Miyato et al. 2018)
          conditional: conditional BatchNorm in G, projection D (Miyato & Koyama 2018)
  stylegan2  mapping MLP (model.stylegan2.mapping_layers, lr x 0.01, w_avg tracked), modulated /
          demodulated convs, per-pixel noise, skip toRGB outputs; residual D with minibatch
          stddev; equalised lr everywhere (Karras et al. 2020). Trained with lazy R1, path-length
          regularisation, style mixing and adaptive augmentation (train.stylegan2)
          conditional: class embedding joined to z in G, projection on a class map in D
  progan  Progressive GAN (Karras et al. 2018): every resolution's layers built up front and
          grown 4x4 -> 8x8 -> ... with a fade-in (train.progan: images per fade and per
          stabilisation); pixel norm, nearest upsampling, minibatch stddev, equalised lr;
          WGAN-GP with the drift term (train.progan.drift), Adam 1e-3 betas (0, 0.99) in the paper
          conditional: class embedding joined to z in G, projection on a class map in D
  stackgan  StackGAN (Zhang et al. 2017): two stages. Stage I draws a low-resolution sketch
          (at stage1_size) from z and the caption; Stage II re-encodes it, joins the
          caption again, refines it through residual blocks and upsamples to image_size. Each
          stage has its own conditioning augmentation (c ~ N(mu(t), sigma(t)^2), KL to N(0, I)
          weighted by train.stackgan.kl_weight); matching-aware D per stage (real image with a
          wrong caption counts as fake). Captions are embedded by the small text encoder the
          featurize stage trains (no pretrained char-CNN-RNN offline); G holds it, its
          vocabulary and each class's mean caption embedding, so class labels condition too.
          Stage I trains first (train.stackgan.stage1_steps), then Stage II with Stage I frozen
  Resolutions: powers of two from 8 to 128, 1 or 3 channels.
  Widths: model.g_width / model.d_width are the channels at 4x4 for the conv architectures (halving
  as the resolution doubles, at least 8) and the narrowest hidden layer's units for mlp.

InfoGAN (model.infogan; Chen et al. 2016)
  categorical + continuous codes as the last entries of z; Q head on D's features;
  mutual-information loss weighted by model.infogan.weight

Losses (model.loss), all on logits and numerically stable
  minimax        L_D = -[log D(x) + log(1 - D(G(z)))], G minimises log(1 - D(G(z)))  (Goodfellow et al. 2014)
  nonsaturating  same L_D, G minimises -log D(G(z))                                  (Goodfellow et al. 2014)
  hinge          L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))], L_G = -E[D(G(z))]     (Lim & Ye 2017)
  wgan-gp        L_D = E[D(G(z))] - E[D(x)] + gp_weight * GP, L_G = -E[D(G(z))]     (Gulrajani et al. 2017)
  lsgan          L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2], L_G = 1/2 E[(D(G(z)) - 1)^2] (Mao et al. 2017)

Image-to-image networks (model.task: translate, model.translate.arch)
  cyclegan  ResNet G (c7s1, 2 downsamplings, model.translate.n_blocks residual blocks, 2 upsamplings)
            and PatchGAN D (model.translate.d_layers: 16 / 34 / 70 px patches), InstanceNorm;
            LSGAN + cycle L1 + identity L1, image pool (Zhu et al. 2017)
  pix2pix   U-Net G with skips, conditional PatchGAN on (input, output); GAN + L1 (Isola et al. 2017)
  stargan   one G(x, target domain) with tiled labels, D with source and domain heads;
            WGAN-GP + domain classification + reconstruction (Choi et al. 2018)

Anomaly detection methods (model.task detect; model.detect.method), trained on normal images only
  ganomaly  encoder-decoder-encoder G, score ||z - z_hat||; adversarial feature matching + L1
            reconstruction + latent loss, D re-initialised when it collapses (Akcay et al. 2018)
  fanogan   WGAN-GP on normal images, then the izi_f encoder with G and D frozen
            (model.detect.encoder_steps); score: image + kappa x D-feature residual (Schlegl et al. 2019)

Super-resolution networks (model.task upscale; model.upscale.generator)
  rrdb      ESRGAN's RRDBNet: residual-in-residual dense blocks, pixel-shuffle x2/x4 (Wang et al. 2018)
  srresnet  SRGAN's residual generator without BatchNorm (Ledig et al. 2017; BasicSR's MSRResNet)
  vgg.D     VGG-style strided discriminator on the high-resolution patch (ESRGAN)

Regularisers and training aids
  spectral norm     model.spectral_norm_G / model.spectral_norm_D (Miyato et al. 2018)
  gradient penalty  train.gp_weight, with wgan-gp; n_critic D steps per G step (train.n_critic)
  R1 penalty        train.r1_gamma, lazily every train.r1_interval D steps (Mescheder et al. 2018)
  EMA of G          train.ema_decay, G_ema is the exported generator (Karras et al. 2018)
  DiffAugment       train.diffaugment = color, translation, cutout on real and fake (Zhao et al. 2020)
  ADA               stylegan2 only: train.stylegan2.ada_target > 0 augments real and fake with
                    probability p, tuned from sign(D(x)) towards the target (Karras et al. 2020b)
  Truncation        stylegan2: in w-space, w_avg + psi (w - w_avg), per class (gan augment --truncation);
                    other architectures: z drawn from a normal truncated to [-t, t]
"""
