"""params.yaml -> typed, validated config objects (one per DVC stage).

    from gan.config import load_params
    params = load_params("params.yaml")      # raises ConfigError naming the key
    params.train.lr_G

Validation happens before any work starts (before Ray or MLflow are touched), and
every failure is one sentence naming the key, the value and what is allowed, e.g.
``params.yaml: train.lr_G = -0.001 is invalid: must be greater than 0.``
pydantic does the checking; :func:`_format_error` only turns its report into that
sentence.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gan.errors import ConfigError
from gan.tasks import TASK_METRICS, TASKS

ARCHS = ("mlp", "dcgan", "resnet", "stylegan2", "progan", "stackgan")
LOSSES = ("minimax", "nonsaturating", "hinge", "wgan-gp", "lsgan")
SOURCES = ("digits", "photos", "photo_patches", "image_folder", "npz", "torchvision", "digits_domains", "domains")
# What a prepared data set must hold for a translate metric to be computed: the digit of every
# image (content) or its true rendering under every domain (oracle). Only the embedded
# digits_domains source writes them (gan/data/domains.py); a folder of domains has neither.
METRIC_NEEDS = {"content_accuracy": "content labels", "psnr": "the true translation", "ssim": "the true translation"}
SOURCES_WITH_ORACLE = ("digits_domains",)
# The embedded domains default's image transforms (gan/data/domains.py), in the order StarGAN's default uses them.
DIGIT_DOMAINS = ("plain", "inverted", "dilated", "dilated_inverted")
# The photographs bundled inside installed wheels (gan/data/photos.py loads them): every
# one loads from files in scikit-image's or scikit-learn's wheel, none through pooch.
RGB_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle")
GRAY_PHOTOS = ("brick", "camera", "coins", "grass", "gravel", "moon")
SKLEARN_PHOTOS = ("china", "flower")
PHOTOS = RGB_PHOTOS + GRAY_PHOTOS + SKLEARN_PHOTOS
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")
METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
# Seeds feed numpy (np.random.seed takes 0..2**32-1) as well as torch: one range for all.
SEED_MAX = 2**32 - 1
# The k of k-nearest-neighbour metrics used inside train and tune (gan.evaluation's default).
TRAINING_NEAREST_K = 5
# A registered model name is part of models:/<name>@<alias> and models:/<name>/<version>
# URIs: MLflow forbids '/' and ':', '@' would be read as an alias, and spaces or other
# punctuation break shell commands and URLs; the SQL store keeps at most 256 characters.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$"
# The smallest resolution each architecture can produce (its first feature map is 4x4,
# doubled by each upsampling block) and the largest we support. StackGAN's Stage I works at
# half the resolution by default and needs 8x8 itself.
MIN_RESOLUTION = {"mlp": 8, "dcgan": 8, "resnet": 8, "stylegan2": 8, "progan": 8, "stackgan": 16}
MAX_RESOLUTION = 128


class _Section(BaseModel):
    """Base for every section: unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PairsConfig(_Section):
    """prepare.pairs: super-resolution pairs (the upscale task) instead of whole resized images."""

    scale: Literal[2, 4] = 4
    patch_size: int = Field(64, description="side of the high-resolution training patches, a multiple of 4 * scale")
    patches_per_image: int = Field(64, gt=0)
    blur: float = Field(0.0, ge=0.0, description="Gaussian blur sigma (high-resolution pixels) before down-sampling")
    noise: float = Field(0.0, ge=0.0, description="Gaussian noise std (0..255 units) added to the low-resolution image")
    val_size: int = Field(0, ge=0, description="centre crop of each validation image to at most this side (0 = whole image)")

    @model_validator(mode="after")
    def _patch_fits_scale(self) -> PairsConfig:
        if self.patch_size < 4 * self.scale or self.patch_size % (4 * self.scale):
            raise ValueError(f"prepare.pairs.patch_size: {self.patch_size} must be a multiple of 4 x scale ({4 * self.scale})")
        if self.val_size and self.val_size < 4 * self.scale:
            raise ValueError(f"prepare.pairs.val_size: {self.val_size} must be 0 (whole images) or at least {4 * self.scale}")
        return self


class PatchesConfig(_Section):
    """prepare.patches: the ``photo_patches`` source, labelled RGB patches of bundled photographs (one class each)."""

    photos: list[str] = Field(default_factory=lambda: ["chelsea", "coffee", "astronaut", "rocket", "china", "flower"],
                              description="bundled photographs (gan.data.photos.PHOTOS), one class each")  # fmt: skip
    per_photo: int = Field(500, gt=0, description="patches cut from each photograph")
    short_side: int = Field(96, gt=0, description="each photograph is resized to this short side before cutting")

    @field_validator("photos")
    @classmethod
    def _known_photos(cls, v: list[str]) -> list[str]:
        bad = [name for name in v if name not in PHOTOS]
        if bad:
            raise ValueError(f"unknown bundled photo '{bad[0]}'; allowed: {', '.join(PHOTOS)}")
        if len(v) < 1 or len(set(v)) != len(v):
            raise ValueError("must list at least one photograph, each once")
        return v


class CaptionsConfig(_Section):
    """prepare.captions: one caption per image, for text-to-image architectures (model.arch stackgan; gan/data/captions.py)."""

    source: Literal["none", "attributes", "file", "npz"] = Field(
        "none", description="none | attributes (class + measured attributes; labelled data) | file (a CSV; image_folder) | npz (its captions array)"
    )
    path: str | None = Field(None, description="source file: the CSV (columns file,caption); default captions.csv inside prepare.path")

    @model_validator(mode="after")
    def _path_only_for_file(self) -> CaptionsConfig:
        if self.path is not None and self.source != "file":
            raise ValueError(f"prepare.captions.path: only source 'file' reads a captions file, but prepare.captions.source is '{self.source}'; remove the path or use source file")
        return self


class PrepareConfig(_Section):
    source: Literal["digits", "photos", "photo_patches", "image_folder", "npz", "torchvision", "digits_domains", "domains"] = "digits"
    path: str | None = None
    # source digits_domains: one disjoint share of the bundled digits per named transform
    domains: list[str] = Field(default_factory=lambda: ["plain", "dilated_inverted"])
    torchvision_class: str | None = None
    image_size: int = Field(16, description="power of two from 8 to 128")
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    shard_size: int = Field(4096, gt=0)
    on_bad_file: Literal["fail", "skip"] = "fail"
    # how images are decoded (never what is written: the same bytes either way): local, in
    # the stage's process; ray, in parallel Ray Data tasks on the cluster; auto, ray for an
    # image folder of at least ray_min_images files on a cluster (RAY_ADDRESS) with more
    # CPUs than this machine (gan.data.decode.engine_for)
    engine: Literal["auto", "local", "ray"] = "auto"
    ray_min_images: int = Field(20000, gt=0)
    # anomaly detection (model.task: detect): which classes are normal; the rest are anomalies
    normal_classes: list[str] | None = None
    anomaly_classes: list[str] | None = None
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of normal images held out for the test split")
    out: str = "data/prepared"
    pairs: PairsConfig | None = None
    patches: PatchesConfig = PatchesConfig()
    captions: CaptionsConfig = CaptionsConfig()

    @field_validator("normal_classes", "anomaly_classes", mode="before")
    @classmethod
    def _class_names(cls, v: Any) -> Any:
        # class names are strings (folder names, digits "0".."9"); YAML gives ints for digits
        if isinstance(v, list):
            return [str(c) for c in v]
        return v

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 8 or v > MAX_RESOLUTION or v & (v - 1):
            raise ValueError(f"must be a power of two from 8 to {MAX_RESOLUTION} (8, 16, 32, 64, 128)")
        return v

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in DIGIT_DOMAINS]
        if bad:
            raise ValueError(f"unknown domain transform '{bad[0]}'; allowed: {', '.join(DIGIT_DOMAINS)}")
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError("must list at least two different domain transforms")
        return v

    @model_validator(mode="after")
    def _source_needs_path(self) -> PrepareConfig:
        if self.source == "photo_patches" and self.patches.short_side < self.image_size:
            raise ValueError(f"prepare.patches.short_side: {self.patches.short_side} is smaller than prepare.image_size = {self.image_size}, so no patch fits; raise it")
        if self.source not in ("digits", "photos", "photo_patches", "digits_domains") and not self.path:
            raise ValueError(f"prepare.path: source '{self.source}' needs a path to the raw data")
        if self.engine == "ray" and (self.source != "image_folder" or self.pairs is not None):
            raise ValueError(f"prepare.engine: ray decodes the files of an image folder, but source '{self.source}'"
                             f"{' with pairs' if self.pairs is not None else ''} has none; use engine auto or local")
        if self.source == "torchvision" and not self.torchvision_class:
            raise ValueError("prepare.torchvision_class: source 'torchvision' needs a class name such as MNIST")
        if self.normal_classes is not None and self.anomaly_classes is not None:
            raise ValueError("prepare.anomaly_classes: give normal_classes or anomaly_classes, not both (the other is every remaining class)")
        for key in ("normal_classes", "anomaly_classes"):
            if getattr(self, key) == []:
                raise ValueError(f"prepare.{key}: an empty list names no class; list at least one or set it to null")
        if problem := self._captions_problem():
            raise ValueError(problem)
        return self

    def _captions_problem(self) -> str | None:
        """Whether prepare.captions.source can work with prepare.source (the message names the key), or None."""
        caption = self.captions.source
        if caption == "none":
            return None
        if self.pairs is not None:
            return "prepare.captions.source: super-resolution pairs (prepare.pairs) carry no captions; set prepare.captions.source: none or prepare.pairs: null"
        needs = {"file": "image_folder", "npz": "npz"}.get(caption)
        if needs and self.source != needs:
            what = "a captions CSV beside an image folder" if caption == "file" else "the captions array of an .npz file"
            return f"prepare.captions.source: '{caption}' reads {what}, but prepare.source is '{self.source}'; use prepare.source {needs} or captions source attributes"
        if caption == "attributes" and self.source == "photos":
            return "prepare.captions.source: 'attributes' names each image's class, but source 'photos' is unlabelled; use source photo_patches (one class per photo)"
        return None

    @property
    def anomaly_split(self) -> bool:
        """Whether prepare writes the anomaly-detection layout (normal-only train/val, a labelled test split)."""
        return self.normal_classes is not None or self.anomaly_classes is not None


class InfoGANConfig(_Section):
    categorical: int = Field(0, ge=0, description="number of categories of the categorical code (0 = off)")
    continuous: int = Field(0, ge=0, description="number of continuous codes (0 = off)")
    weight: float = Field(1.0, ge=0.0)

    @field_validator("categorical")
    @classmethod
    def _not_one(cls, value: int) -> int:
        if value == 1:  # one category carries no information: Q would have nothing to recover
            raise ValueError("use 0 (off) or at least 2 categories")
        return value


class TranslateConfig(_Section):
    """model.translate: the translate task's architecture and loss weights (gan/tasks/translate.py)."""

    arch: Literal["cyclegan", "pix2pix", "stargan"] = "cyclegan"
    n_blocks: int = Field(9, gt=0, description="residual blocks of CycleGAN's / StarGAN's G")
    d_layers: int = Field(3, ge=1, le=5, description="PatchGAN stride-2 layers: receptive field 16, 34, 70 px for 1, 2, 3")
    lambda_cyc: float = Field(10.0, ge=0.0)
    lambda_id: float = Field(0.5, ge=0.0, description="identity weight as a fraction of lambda_cyc")
    pool_size: int = Field(50, ge=0, description="image pool of past fakes shown to D (0 = off)")
    decay_start: float = Field(0.5, ge=0.0, le=1.0, description="fraction of train.steps at constant lr before the linear decay")
    lambda_l1: float = Field(100.0, ge=0.0)
    lambda_cls: float = Field(1.0, ge=0.0)
    lambda_rec: float = Field(10.0, ge=0.0)
    lambda_idt: float = Field(0.0, ge=0.0, description="StarGAN only: identity L1, G(x, own domain) ~ x (0 = off, as the reference)")
    lambda_gp: float = Field(10.0, ge=0.0)
    targets: Literal["shuffle", "other"] = Field("shuffle", description="StarGAN's target domains: the reference's shuffled batch labels, or any but the image's own")
    adversarial: Literal["wgan-gp", "lsgan"] = Field("wgan-gp", description="StarGAN's adversarial loss: the reference's WGAN-GP, or CycleGAN's LSGAN (no penalty)")
    metric: Literal["target_accuracy", "content_accuracy", "cycle_l1", "fid", "psnr", "ssim"] = "target_accuracy"


class DetectConfig(_Section):
    """model.detect: the detect task's method and loss weights (GANomaly, f-AnoGAN)."""

    method: Literal["ganomaly", "fanogan"] = "ganomaly"
    w_adv: float = Field(1.0, ge=0.0, description="GANomaly: weight of the feature-matching adversarial loss")
    w_con: float = Field(50.0, ge=0.0, description="GANomaly: weight of the L1 reconstruction loss")
    w_enc: float = Field(1.0, ge=0.0, description="GANomaly: weight of the latent (encoder) loss")
    d_reinit_below: float = Field(1e-5, ge=0.0, description="GANomaly: re-initialise D when its loss falls below this (0 = never)")
    kappa: float = Field(1.0, ge=0.0, description="f-AnoGAN: weight of the feature residual in izi_f's loss and score")
    encoder_steps: int = Field(500, gt=0, description="f-AnoGAN: the last this-many train.steps train the encoder (G, D frozen)")
    target_fpr: float = Field(0.05, gt=0.0, lt=1.0, description="threshold: this share of normal validation images is flagged")


class UpscaleConfig(_Section):
    """model.upscale: the upscale task's networks, its two phases and their losses (ESRGAN's recipe)."""

    generator: Literal["rrdb", "srresnet"] = "rrdb"
    blocks: int = Field(4, gt=0, description="RRDB or residual blocks in G")
    width: int = Field(32, gt=0, description="G's feature channels")
    growth: int = Field(16, gt=0, description="RRDB: channels added by each dense layer")
    d_width: int = Field(32, gt=0)
    pretrain_steps: int = Field(1000, gt=0, description="steps of the PSNR phase (L1) before the GAN phase")
    lr_milestones: list[int] = Field(default_factory=list, description="steps into each phase at which its learning rates halve")
    l1_weight: float = Field(0.01, ge=0.0)
    perceptual_weight: float = Field(1.0, ge=0.0)
    gan_weight: float = Field(0.005, gt=0.0)
    perceptual: Literal["features", "vgg19", "none"] = "features"
    features: str = "models/features"
    vgg_weights: str | None = None

    @field_validator("lr_milestones")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(m <= 0 for m in v) or v != sorted(set(v)):
            raise ValueError("must be increasing positive step counts, e.g. [5000, 10000]")
        return v

    @model_validator(mode="after")
    def _vgg_needs_weights(self) -> UpscaleConfig:
        if self.perceptual == "vgg19" and not self.vgg_weights:
            raise ValueError("model.upscale.vgg_weights: perceptual 'vgg19' needs a path to VGG19 weights on disk (never downloaded)")
        return self


class StyleGAN2ModelConfig(_Section):
    """StyleGAN2's network knobs (used when model.arch is stylegan2)."""

    w_dim: int = Field(64, gt=0, description="size of the intermediate latent w (512 in the paper)")
    mapping_layers: int = Field(2, gt=0, description="depth of the mapping MLP (8 in the paper)")
    mbstd_group: int = Field(4, gt=0, description="minibatch-stddev group size in D (stylegan2 and progan)")


class StyleGAN2TrainConfig(_Section):
    """StyleGAN2's training knobs (Karras et al. 2020; used when model.arch is stylegan2)."""

    mixing_prob: float = Field(0.9, ge=0.0, le=1.0, description="style mixing probability")
    pl_weight: float = Field(2.0, ge=0.0, description="path-length regularisation weight (0 = off)")
    pl_interval: int = Field(4, gt=0, description="G steps between path-length regularisation steps")
    pl_decay: float = Field(0.01, gt=0.0, le=1.0, description="decay of the path-length running mean")
    pl_batch_shrink: int = Field(2, gt=0, description="path-length batch = batch_size // pl_batch_shrink")
    w_avg_beta: float = Field(0.995, ge=0.0, lt=1.0, description="tracking of w_avg for truncation")
    ada_target: float = Field(0.6, ge=0.0, lt=1.0, description="ADA target for E[sign(D(x))] (0 = no ADA)")
    ada_interval: int = Field(4, gt=0, description="D steps between adjustments of p")
    ada_kimg: float = Field(500.0, gt=0.0, description="thousands of images for p to move by 1")


class ProGANTrainConfig(_Section):
    """Progressive growing's schedule and drift term (Karras et al. 2018; used when model.arch is progan).

    Lengths are real images shown to D (train.batch_size x workers x n_critic per step):
    4x4 trains for ``stabilise_images``, then each larger resolution fades in over
    ``fade_images`` and stabilises for ``stabilise_images``; the last one trains on to the end.
    """

    fade_images: int = Field(16000, ge=0, description="images over which a new resolution fades in (600k in the paper)")
    stabilise_images: int = Field(16000, ge=0, description="images per resolution at full strength (600k in the paper)")
    drift: float = Field(0.001, ge=0.0, description="drift term epsilon * E[D(x)^2] on D (0.001 in the paper)")


class StackGANModelConfig(_Section):
    """StackGAN's network knobs (Zhang et al. 2017; used when model.arch is stackgan)."""

    c_dim: int = Field(32, gt=0, description="conditioning augmentation's output; 128 in the paper")
    stage1_size: int = Field(0, ge=0, description="Stage-I resolution; 0 = image_size // 2")
    n_res: int = Field(2, gt=0, description="Stage-II residual blocks; 4 in the paper")

    @field_validator("stage1_size")
    @classmethod
    def _stage1_power_of_two(cls, v: int) -> int:
        if v and (v < 8 or v & (v - 1)):
            raise ValueError("must be 0 (image_size // 2) or a power of two of at least 8, below prepare.image_size")
        return v


class StackGANTrainConfig(_Section):
    """StackGAN's two-stage schedule (Zhang et al. 2017; used when model.arch is stackgan)."""

    stage1_steps: int = Field(200, ge=1, description="steps of Stage I; Stage II trains after, Stage I frozen")
    kl_weight: float = Field(2.0, ge=0.0, description="conditioning augmentation's KL weight (2.0 in the paper)")
    lr_decay_steps: int = Field(0, ge=0, description="halve the learning rates every this many steps within each stage; 0 = never (100 epochs in the paper)")


class ModelConfig(_Section):
    task: str = "generate"
    arch: Literal["mlp", "dcgan", "resnet", "stylegan2", "progan", "stackgan"] = "dcgan"
    conditional: bool = True
    z_dim: int = Field(64, gt=0)
    g_width: int = Field(64, gt=0)
    d_width: int = Field(64, gt=0)
    spectral_norm_G: bool = False
    spectral_norm_D: bool = False
    g_upsample: Literal["resize", "transposed"] = "resize"
    loss: Literal["minimax", "nonsaturating", "hinge", "wgan-gp", "lsgan"] = "hinge"
    infogan: InfoGANConfig = InfoGANConfig()
    translate: TranslateConfig = TranslateConfig()
    detect: DetectConfig = DetectConfig()
    upscale: UpscaleConfig = UpscaleConfig()
    stylegan2: StyleGAN2ModelConfig = StyleGAN2ModelConfig()
    stackgan: StackGANModelConfig = StackGANModelConfig()

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task '{v}'; allowed values are {', '.join(TASKS)}")
        return v


class PrivacyConfig(_Section):
    """train.privacy: DP-SGD (Abadi et al. 2016) on the optimisers that read real data (the discriminator), via Opacus."""

    enabled: bool = False
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample clipping norm C")
    noise_multiplier: float | None = Field(None, gt=0, description="noise std / C; or leave null and set target_epsilon")
    target_epsilon: float | None = Field(None, gt=0, description="epsilon at the end of training; the accountant derives the noise")
    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "prv"] = "rdp"

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacyConfig:
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("train.privacy: set exactly one of noise_multiplier and target_epsilon when privacy is enabled")
        return self


class TrainConfig(_Section):
    num_workers: int = Field(1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, ge=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    batch_size: int = Field(64, gt=0)
    steps: int = Field(2000, gt=0)
    lr_G: float = Field(2e-4, gt=0)
    lr_D: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    n_critic: int = Field(1, gt=0)
    gp_weight: float = Field(10.0, ge=0.0)
    r1_gamma: float = Field(0.0, ge=0.0)
    r1_interval: int = Field(16, gt=0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    diffaugment: str = ""
    stylegan2: StyleGAN2TrainConfig = StyleGAN2TrainConfig()
    progan: ProGANTrainConfig = ProGANTrainConfig()
    stackgan: StackGANTrainConfig = StackGANTrainConfig()
    mixed_precision: Literal["bf16", "none"] = "bf16"
    channels_last: bool = True
    checkpoint_every: int = Field(200, gt=0)
    sample_every: int = Field(500, gt=0)
    log_every: int = Field(50, gt=0)
    eval_every: int = Field(0, ge=0, description="steps between FID evaluations (0 = only at the end)")
    eval_samples: int = Field(500, gt=0)
    max_failures: int = Field(2, ge=0)
    divergence_patience: int = Field(200, gt=0)
    storage_path: str = ".ray_storage"
    # True: discard this config's checkpoints under storage_path and train from step 0
    # (a param, so that `dvc exp run -S train.fresh=true` can drive it); False: resume
    fresh: bool = False
    seed: int = Field(0, ge=0, le=SEED_MAX)
    privacy: PrivacyConfig = PrivacyConfig()

    @field_validator("diffaugment")
    @classmethod
    def _policy(cls, v: str) -> str:
        names = [p.strip() for p in v.split(",") if p.strip()]
        bad = [p for p in names if p not in DIFFAUGMENT_POLICIES]
        if bad:
            raise ValueError(f"unknown policy '{bad[0]}'; allowed: a comma-separated list of {', '.join(DIFFAUGMENT_POLICIES)} or ''")
        return ",".join(names)


class TextEncoderConfig(_Section):
    """featurize.text: the caption encoder trained when the prepared data has captions (gan.text_encoder)."""

    embed_dim: int = Field(64, gt=0, description="word embedding size")
    text_dim: int = Field(64, gt=0, description="caption embedding size (what StackGAN conditions on)")
    max_len: int = Field(16, gt=0, description="words per caption kept")
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=1)
    lr: float = Field(2e-3, gt=0)


class FeaturizeConfig(_Section):
    epochs: int = Field(8, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    width: int = Field(32, gt=0)
    feature_dim: int = Field(128, gt=0)
    quality_weight: float = Field(0.1, ge=0, description="weight of the self-supervised sharp/blurred/noisy head (0 = off)")
    inception_weights: str | None = None
    text: TextEncoderConfig = TextEncoderConfig()
    seed: int = Field(0, ge=0, le=SEED_MAX)


class EvaluateConfig(_Section):
    num_samples: int = Field(2000, gt=0)
    batch_size: int = Field(500, gt=0)
    nearest_k: int = Field(5, gt=0)
    kid_subset_size: int = Field(500, gt=1)
    seed: int = Field(0, ge=0, le=SEED_MAX)


class TuneConfig(_Section):
    enabled: bool = True
    num_samples: int = Field(8, gt=0)
    search_alg: Literal["random", "grid", "optuna"] = "random"
    scheduler: Literal["asha", "pbt", "pb2", "fifo"] = "asha"
    lr_G: tuple[float, float] = (1e-5, 1e-3)
    lr_D: tuple[float, float] = (1e-5, 1e-3)
    beta1: tuple[float, float] | None = None
    n_critic: list[int] | None = None
    max_steps: int = Field(600, gt=0)
    eval_every: int = Field(100, gt=0)
    eval_samples: int = Field(500, gt=0)
    metric: str = Field("fid", description="the task's metric to optimise (gan.tasks.TASK_METRICS: generate fid | kid; detect auroc | average_precision; translate target_accuracy ...)")
    grace_period: int = Field(1, gt=0, description="evaluations before ASHA may stop a trial")
    reduction_factor: int = Field(3, gt=1)
    perturbation_interval: int = Field(2, gt=0, description="evaluations between PBT/PB2 perturbations")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    workers_per_trial: int = Field(1, gt=0)
    max_concurrent_trials: int = Field(2, gt=0)
    storage_path: str = ".ray_storage"
    seed: int = Field(0, ge=0, le=SEED_MAX)

    @field_validator("lr_G", "lr_D", "beta1")
    @classmethod
    def _range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (0 <= v[0] < v[1]):
            raise ValueError("must be [low, high] with 0 <= low < high")
        return v

    @field_validator("lr_G", "lr_D")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError("must be [low, high] with 0 < low < high (searched on a log scale)")
        return v


class RegisterConfig(_Section):
    model_name: str = Field("digits-gan", min_length=1)
    # a registered name stands for one output schema; True lets a new schema replace the champion's
    allow_schema_change: bool = False
    metric: str = Field("fid", description="the task's metric to gate on (gan.tasks.TASK_METRICS: generate fid | kid; detect auroc | average_precision; translate target_accuracy ...)")
    min_improvement: float = Field(0.0, ge=0.0, description="relative: challenger must beat the champion by this fraction")
    eval_samples: int = Field(1000, gt=0)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    max_memorisation: float | None = Field(
        None, gt=0.5, le=1.0, description="largest privacy-audit figure (0.5 = no memorisation) a champion may have; null = no gate"
    )

    @field_validator("model_name")
    @classmethod
    def _registry_name(cls, v: str) -> str:
        import re

        if not re.fullmatch(MODEL_NAME_PATTERN, v):
            raise ValueError(
                "must start with a letter or digit and hold only letters, digits, '.', '_' and '-', at most 256 of them "
                "(MLflow forbids '/' and ':', and '@' would be read as an alias in models:/ URIs)"
            )
        return v


class AugmentEvalConfig(_Section):
    real_per_class: int = Field(10, gt=0)
    synthetic_per_class: int = Field(100, gt=0)
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0)
    seed: int = Field(0, ge=0, le=SEED_MAX)


with warnings.catch_warnings():
    # pydantic warns that the field `register` shadows ABCMeta.register on the class;
    # instances read the field, which is all the code uses.
    warnings.filterwarnings("ignore", message='Field name "register"')

    class Params(_Section):
        prepare: PrepareConfig = PrepareConfig()
        model: ModelConfig = ModelConfig()
        featurize: FeaturizeConfig = FeaturizeConfig()
        train: TrainConfig = TrainConfig()
        evaluate: EvaluateConfig = EvaluateConfig()
        tune: TuneConfig = TuneConfig()
        register: RegisterConfig = RegisterConfig()
        augment_eval: AugmentEvalConfig = AugmentEvalConfig()

        @model_validator(mode="before")
        @classmethod
        def _task_metric_defaults(cls, raw: Any) -> Any:
            # tune.metric / register.metric left out or null: the task's primary metric (fid for generate, auroc for detect)
            model = raw.get("model") if isinstance(raw, dict) else None
            task = model.get("task", "generate") if isinstance(model, dict) else "generate" if isinstance(raw, dict) and model is None else None
            if task not in TASK_METRICS:
                return raw  # an unknown task or a malformed section: its own error follows
            primary = next(iter(TASK_METRICS[task]))
            raw = dict(raw)
            for section in ("tune", "register"):
                if section in raw and not isinstance(raw[section], dict):
                    continue  # a malformed section: its own error follows
                values = dict(raw.get(section) or {})
                if values.get("metric") is None:  # absent or null
                    values["metric"] = primary
                raw[section] = values
            return raw

        @model_validator(mode="after")
        def _cross_checks(self) -> Params:
            arch, size = self.model.arch, self.prepare.image_size
            if size < MIN_RESOLUTION[arch]:
                raise ValueError(f"prepare.image_size: model '{arch}' cannot produce {size}x{size}; use at least {MIN_RESOLUTION[arch]}")
            problem = cross_key_problem(self)
            if problem:
                raise ValueError(problem)
            allowed = TASK_METRICS[self.model.task]
            for key, value in (("tune.metric", self.tune.metric), ("register.metric", self.register.metric)):
                if value not in allowed:
                    raise ValueError(f"{key}: '{value}' is not a metric of model.task '{self.model.task}'; allowed values are {', '.join(allowed)}")
            if self.model.task == "detect" and not self.prepare.anomaly_split:
                raise ValueError("prepare.normal_classes: model.task 'detect' needs prepare.normal_classes or prepare.anomaly_classes (which classes are normal)")
            train = self.train
            if train.privacy.enabled:
                # Opacus computes per-sample gradients of first derivatives only: a penalty on
                # D's input gradient (WGAN-GP, R1) would need them through a double backward
                if self.model.loss == "wgan-gp" and train.gp_weight > 0:
                    raise ValueError("train.privacy.enabled: DP-SGD cannot train the WGAN-GP gradient penalty (it needs a double backward); use another model.loss or set train.gp_weight: 0")
                if train.r1_gamma > 0:
                    raise ValueError("train.privacy.enabled: DP-SGD cannot train the R1 penalty (it needs a double backward); set train.r1_gamma: 0")
            return self


def cross_key_problem(p: Params) -> str | None:
    """The first constraint between keys that a stage relies on and ``p`` breaks, as
    ``key: what is wrong; what to do`` (the key first, as every config message), or None."""
    from gan.paths import relation

    tune, ev = p.tune, p.evaluate
    if tune.max_steps < tune.eval_every:
        return (f"tune.max_steps: {tune.max_steps} is smaller than tune.eval_every = {tune.eval_every}, so no trial would ever "
                "be scored; raise tune.max_steps or lower tune.eval_every")
    if tune.beta1 is not None and tune.beta1[1] >= 1.0:
        return f"tune.beta1: the range {list(tune.beta1)} reaches {tune.beta1[1]}, but train.beta1 must be below 1 (Adam); use a high end below 1 such as 0.9"
    if tune.n_critic and min(tune.n_critic) < 1:
        return f"tune.n_critic: {list(tune.n_critic)} holds {min(tune.n_critic)}, but train.n_critic must be at least 1 (D steps per G step); list positive counts"
    evaluations = tune.max_steps // tune.eval_every
    if tune.scheduler == "asha" and tune.grace_period > evaluations:
        return (f"tune.grace_period: {tune.grace_period} evaluations is more than the {evaluations} a trial makes "
                f"(tune.max_steps {tune.max_steps} / tune.eval_every {tune.eval_every}); lower it to at most {evaluations}")
    if tune.scheduler in ("pbt", "pb2") and tune.perturbation_interval >= evaluations:
        return (f"tune.perturbation_interval: {tune.perturbation_interval} evaluations is not less than the {evaluations} a trial makes, "
                f"so {tune.scheduler} would never perturb a trial; lower it or raise tune.max_steps")
    # k-nearest-neighbour metrics (precision/recall, density/coverage) are the generate task's
    knn = p.model.task == "generate"
    for key, samples in (("evaluate.num_samples", ev.num_samples), ("register.eval_samples", p.register.eval_samples)):
        if knn and samples <= ev.nearest_k:
            return f"evaluate.nearest_k: {ev.nearest_k} needs more than that many samples but {key} = {samples}; raise {key} or lower evaluate.nearest_k"
    for key, samples in (("train.eval_samples", p.train.eval_samples), ("tune.eval_samples", tune.eval_samples)):
        if knn and samples <= TRAINING_NEAREST_K:
            return f"{key}: {samples} samples are too few for the metrics' {TRAINING_NEAREST_K} nearest neighbours; use more than {TRAINING_NEAREST_K}"
    if p.prepare.path and (rel := relation(p.prepare.out, p.prepare.path)):
        return (f"prepare.out: {p.prepare.out} {rel} prepare.path = {p.prepare.path}, and preparing would "
                f"{'change' if rel == 'lies inside' else 'delete'} the raw data; choose an output outside {p.prepare.path}")
    if p.model.task == "detect" and p.model.detect.method == "fanogan":
        # the task trains the GAN for the first steps - encoder_steps of a run: a tune trial too
        runs = [("train.steps", p.train.steps)] + ([("tune.max_steps", tune.max_steps)] if tune.enabled else [])
        for key, steps in runs:
            if p.model.detect.encoder_steps >= steps:
                return (f"model.detect.encoder_steps: {p.model.detect.encoder_steps} must be less than {key} = {steps}, so that the GAN "
                        f"trains before the encoder in every run; lower it or raise {key}")
    if problem := _model_problem(p):
        return problem
    if p.model.task == "translate" and (problem := _translate_problem(p) or _translate_metric_problem(p)):
        return problem
    if p.model.task == "upscale" and (problem := _upscale_problem(p)):
        return problem
    if p.model.arch == "progan" and (problem := _growth_problem(p)):
        return problem
    if p.model.arch == "stackgan" and (problem := _stackgan_problem(p)):
        return problem
    for key in ("train.storage_path", "tune.storage_path"):
        storage = getattr(p, key.split(".")[0]).storage_path
        if "://" not in storage and (rel := relation(p.prepare.out, storage)):
            return f"prepare.out: {p.prepare.out} {rel} {key} = {storage}, and preparing would delete Ray's checkpoints; keep them apart"
    return None


# Architectures built with equalised learning rates, whose G takes no InfoGAN codes: the same
# list as gan.models.EQUALIZED_ARCHS (tests/test_config.py checks; the models never import config)
EQUALIZED_ARCHS = ("stylegan2", "progan")
# Sources whose prepared data the translate task reads: labels are domains (gan.data.prepare writes them so)
TRANSLATE_SOURCES = ("digits_domains", "domains")


def _model_problem(p: Params) -> str | None:
    """Rules between model.* and train.* that the networks and recipes rely on (checked here, so `gan check` sees them)."""
    m, t = p.model, p.train
    if p.model.task != "generate":
        return None
    if m.arch in EQUALIZED_ARCHS and (m.infogan.categorical or m.infogan.continuous):
        return (f"model.infogan: codes are not supported with model.arch = '{m.arch}'; "
                "set model.infogan.categorical and model.infogan.continuous to 0")  # fmt: skip
    if m.arch in EQUALIZED_ARCHS and (m.spectral_norm_G or m.spectral_norm_D):
        return (f"model.spectral_norm_D: spectral norm (spectral_norm_G / spectral_norm_D) is not supported with model.arch = '{m.arch}' "
                "(it uses equalised learning rates); set both to false")  # fmt: skip
    if m.arch == "stylegan2" and t.diffaugment and t.stylegan2.ada_target > 0:
        return "train.diffaugment: train.diffaugment and train.stylegan2.ada_target are both on; set train.diffaugment: '' or train.stylegan2.ada_target: 0"
    if m.arch == "stackgan" and m.loss == "wgan-gp":
        return ("model.loss: 'wgan-gp' is not supported with model.arch = 'stackgan' (its matching-aware D is trained with a "
                "cross-entropy); use nonsaturating as the paper does")  # fmt: skip
    return None


def _translate_problem(p: Params) -> str | None:
    """The translate task's data and architecture rules that params alone decide."""
    pre, arch, d_layers = p.prepare, p.model.translate.arch, p.model.translate.d_layers
    if pre.source not in TRANSLATE_SOURCES:
        return f"prepare.source: model.task 'translate' needs domain data, not '{pre.source}'; set prepare.source to {' or '.join(TRANSLATE_SOURCES)}"
    if arch in ("cyclegan", "pix2pix") and pre.source == "digits_domains" and len(pre.domains) != 2:
        return (f"prepare.domains: model.translate.arch '{arch}' translates between two domains but {len(pre.domains)} are listed "
                f"({', '.join(pre.domains)}); list two or use stargan")  # fmt: skip
    if arch == "pix2pix" and pre.source not in SOURCES_WITH_ORACLE:
        return f"model.translate.arch: 'pix2pix' needs paired data, which only prepare.source {' or '.join(SOURCES_WITH_ORACLE)} keeps; use it or cyclegan"
    if arch in ("cyclegan", "pix2pix") and pre.image_size < 3 * 2**d_layers:
        deepest = max(1, int(math.log2(pre.image_size / 3)))
        return f"model.translate.d_layers = {d_layers} is too deep for {pre.image_size}px images; use at most {deepest}"
    return None


def _upscale_problem(p: Params) -> str | None:
    """The upscale task trains on super-resolution pairs whose patch D reads at a power-of-two size."""
    pairs = p.prepare.pairs
    if pairs is None:
        return "prepare.pairs: model.task 'upscale' needs super-resolution pairs; set prepare.pairs (scale, patch_size)"
    if pairs.patch_size & (pairs.patch_size - 1):
        return f"prepare.pairs.patch_size: {pairs.patch_size} is invalid for model.task 'upscale': D needs a power of two (16, 32, 64, 128)"
    return None


def _translate_metric_problem(p: Params) -> str | None:
    """A translate metric named in params that the prepared data cannot produce (content accuracy on a folder of domains)."""
    if p.prepare.source in SOURCES_WITH_ORACLE:
        return None
    for key, name in (("model.translate.metric", p.model.translate.metric), ("tune.metric", p.tune.metric), ("register.metric", p.register.metric)):
        if name in METRIC_NEEDS:
            usable = ", ".join(m for m in TASK_METRICS["translate"] if m not in METRIC_NEEDS)
            return (f"{key}: '{name}' needs {METRIC_NEEDS[name]}, which only prepare.source {' or '.join(SOURCES_WITH_ORACLE)} writes "
                    f"(prepare.source is {p.prepare.source}); use one of {usable}")
    return None


def _growth_problem(p: Params) -> str | None:
    """ProGAN: whether train.steps reach the full resolution at full strength (else the export would be blocky)."""
    from gan.growth import images_to_full_growth

    t = p.train
    per_step = t.batch_size * t.n_critic * t.num_workers
    needed = images_to_full_growth(p.prepare.image_size, t.progan.fade_images, t.progan.stabilise_images)
    if (t.steps - 1) * per_step >= needed:
        return None
    return (f"train.steps: {t.steps} steps show {(t.steps - 1) * per_step} real images before the last one, but progressive "
            f"growing reaches {p.prepare.image_size}x{p.prepare.image_size} at full strength only after {needed} "
            f"(train.progan.fade_images / stabilise_images); raise train.steps to at least {1 + -(-needed // per_step)} or shorten the growth")


def _stackgan_problem(p: Params) -> str | None:
    """StackGAN: captions to condition on, the generate task, a Stage I below the output size, and steps for Stage II."""
    m, t = p.model.stackgan, p.train.stackgan
    if p.prepare.captions.source == "none":
        return "model.arch: 'stackgan' generates images from captions, but prepare.captions.source is 'none'; set it to attributes, file or npz"
    if p.model.task != "generate":
        return f"model.arch: 'stackgan' is an architecture of model.task 'generate', not '{p.model.task}'; set model.task: generate"
    if m.stage1_size >= p.prepare.image_size:
        return (f"model.stackgan.stage1_size: {m.stage1_size} is not below prepare.image_size = {p.prepare.image_size}, "
                f"so Stage II would not upsample; use at most {p.prepare.image_size // 2} (or 0 for half the size)")
    if p.train.steps <= t.stage1_steps:
        return (f"train.steps: {p.train.steps} is not more than train.stackgan.stage1_steps = {t.stage1_steps}, so Stage II "
                f"would never train; raise train.steps above {t.stage1_steps} or lower train.stackgan.stage1_steps")
    if p.tune.enabled and p.tune.max_steps <= t.stage1_steps:
        # trials train tune.max_steps steps each: they would fail as they start
        return (f"tune.max_steps: {p.tune.max_steps} is not more than train.stackgan.stage1_steps = {t.stage1_steps}, so no "
                f"tune trial would train Stage II; raise tune.max_steps above {t.stage1_steps}, lower the stage1 steps or set tune.enabled: false")
    return None


def resolve_worker_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """``params.model_dump()`` with the files that workers read themselves made absolute
    (``model.upscale.features`` / ``vgg_weights``): Ray Tune runs trials in their own directories."""
    if raw.get("model", {}).get("task") != "upscale":
        return raw
    upscale = raw["model"].get("upscale") or {}
    for key in ("features", "vgg_weights"):
        if upscale.get(key):
            upscale[key] = str(Path(upscale[key]).expanduser().resolve())
    return raw


def load_params(path: str | os.PathLike = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate ``path``; ``overrides`` maps dotted keys (``train.lr_G``) to values."""
    path = Path(path)
    raw = _read_yaml(path)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    return parse_params(raw, source=str(path))


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; errors name ``source`` and the dotted key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, raw, source)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run from the project root or pass --params PATH.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}; fix the syntax and run again.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of stage sections (prepare:, train:, ...), not a {type(raw).__name__}.")
    return raw


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _lookup(raw: Any, loc: tuple) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _format_error(err: ValidationError, raw: dict[str, Any], source: str) -> str:
    """One sentence for the first problem pydantic found."""
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not isinstance(p, str) or not p.startswith("function-"))
    key = ".".join(str(p) for p in loc)
    msg = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    kind = first["type"]
    if kind == "extra_forbidden":
        section = ".".join(str(p) for p in loc[:-1]) or "top level"
        model = Params
        for part in loc[:-1]:
            model = model.model_fields[part].annotation if isinstance(part, str) and part in model.model_fields else model
        allowed = ", ".join(model.model_fields) if hasattr(model, "model_fields") else ""
        return f"{source}: unknown key '{key}' in {section}; allowed keys: {allowed}."
    if kind == "literal_error":
        return f"{source}: {key} = {_lookup(raw, loc)!r} is invalid: {msg.replace('must be', 'allowed values are')}."
    if not key or (kind == "value_error" and msg.split(":")[0].count(".") >= 1 and " " not in msg.split(":")[0]):
        # a model-level validator: its message already starts with the dotted key
        return f"{source}: {msg.rstrip('.')}."
    if loc and isinstance(loc[-1], int):
        # an item of a list-valued key ([low, high] ranges): name the key and its whole value
        loc, key = loc[:-1], ".".join(str(p) for p in loc[:-1])
    if kind in ("missing", "too_long") and isinstance(_lookup(raw, loc), list):
        msg = "must be a list of exactly two numbers [low, high]"  # the only fixed-length lists are ranges
    value = _lookup(raw, loc)
    return f"{source}: {key} = {value!r} is invalid: {msg.rstrip('.')}."
