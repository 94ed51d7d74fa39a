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

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gan.errors import ConfigError
from gan.tasks import TASKS

ARCHS = ("mlp", "dcgan", "resnet")
LOSSES = ("minimax", "nonsaturating", "hinge", "wgan-gp", "lsgan")
SOURCES = ("digits", "image_folder", "npz", "torchvision")
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")
METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
# The smallest resolution each architecture can produce (its first feature map is 4x4,
# doubled by each upsampling block) and the largest we support.
MIN_RESOLUTION = {"mlp": 8, "dcgan": 8, "resnet": 8}
MAX_RESOLUTION = 128


class _Section(BaseModel):
    """Base for every section: unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PrepareConfig(_Section):
    source: Literal["digits", "image_folder", "npz", "torchvision"] = "digits"
    path: str | None = None
    torchvision_class: str | None = None
    image_size: int = Field(16, description="power of two from 8 to 128")
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0
    shard_size: int = Field(4096, gt=0)
    on_bad_file: Literal["fail", "skip"] = "fail"
    out: str = "data/prepared"

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 8 or v > MAX_RESOLUTION or v & (v - 1):
            raise ValueError(f"must be a power of two from 8 to {MAX_RESOLUTION} (8, 16, 32, 64, 128)")
        return v

    @model_validator(mode="after")
    def _source_needs_path(self) -> PrepareConfig:
        if self.source != "digits" and not self.path:
            raise ValueError(f"prepare.path: source '{self.source}' needs a path to the raw data")
        if self.source == "torchvision" and not self.torchvision_class:
            raise ValueError("prepare.torchvision_class: source 'torchvision' needs a class name such as MNIST")
        return self


class InfoGANConfig(_Section):
    categorical: int = Field(0, ge=0, description="number of categories of the categorical code (0 = off)")
    continuous: int = Field(0, ge=0, description="number of continuous codes (0 = off)")
    weight: float = Field(1.0, ge=0.0)


class ModelConfig(_Section):
    task: str = "generate"
    arch: Literal["mlp", "dcgan", "resnet"] = "dcgan"
    conditional: bool = True
    z_dim: int = Field(64, gt=0)
    g_width: int = Field(64, gt=0)
    d_width: int = Field(64, gt=0)
    spectral_norm_G: bool = False
    spectral_norm_D: bool = False
    loss: Literal["minimax", "nonsaturating", "hinge", "wgan-gp", "lsgan"] = "hinge"
    infogan: InfoGANConfig = InfoGANConfig()

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
    seed: int = 0
    privacy: PrivacyConfig = PrivacyConfig()

    @field_validator("diffaugment")
    @classmethod
    def _policy(cls, v: str) -> str:
        names = [p.strip() for p in v.split(",") if p.strip()]
        bad = [p for p in names if p not in DIFFAUGMENT_POLICIES]
        if bad:
            raise ValueError(f"unknown policy '{bad[0]}'; allowed: a comma-separated list of {', '.join(DIFFAUGMENT_POLICIES)} or ''")
        return ",".join(names)


class FeaturizeConfig(_Section):
    epochs: int = Field(8, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    width: int = Field(32, gt=0)
    feature_dim: int = Field(128, gt=0)
    inception_weights: str | None = None
    seed: int = 0


class EvaluateConfig(_Section):
    num_samples: int = Field(2000, gt=0)
    batch_size: int = Field(500, gt=0)
    nearest_k: int = Field(5, gt=0)
    kid_subset_size: int = Field(500, gt=1)
    seed: int = 0


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
    metric: Literal["fid", "kid"] = "fid"
    grace_period: int = Field(1, gt=0, description="evaluations before ASHA may stop a trial")
    reduction_factor: int = Field(3, gt=1)
    perturbation_interval: int = Field(2, gt=0, description="evaluations between PBT/PB2 perturbations")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    workers_per_trial: int = Field(1, gt=0)
    max_concurrent_trials: int = Field(2, gt=0)
    storage_path: str = ".ray_storage"
    seed: int = 0

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
    metric: Literal["fid", "kid"] = "fid"
    min_improvement: float = Field(0.0, ge=0.0, description="relative: challenger must be lower by this fraction")
    eval_samples: int = Field(1000, gt=0)
    seed: int = 0
    max_memorisation: float | None = Field(
        None, gt=0.5, le=1.0, description="largest privacy-audit figure (0.5 = no memorisation) a champion may have; null = no gate"
    )


class AugmentEvalConfig(_Section):
    real_per_class: int = Field(10, gt=0)
    synthetic_per_class: int = Field(100, gt=0)
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0


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

        @model_validator(mode="after")
        def _cross_checks(self) -> Params:
            arch, size = self.model.arch, self.prepare.image_size
            if size < MIN_RESOLUTION[arch]:
                raise ValueError(f"prepare.image_size: model '{arch}' cannot produce {size}x{size}; use at least {MIN_RESOLUTION[arch]}")
            train = self.train
            if train.privacy.enabled:
                # Opacus computes per-sample gradients of first derivatives only: a penalty on
                # D's input gradient (WGAN-GP, R1) would need them through a double backward
                if self.model.loss == "wgan-gp" and train.gp_weight > 0:
                    raise ValueError("train.privacy.enabled: DP-SGD cannot train the WGAN-GP gradient penalty (it needs a double backward); use another model.loss or set train.gp_weight: 0")
                if train.r1_gamma > 0:
                    raise ValueError("train.privacy.enabled: DP-SGD cannot train the R1 penalty (it needs a double backward); set train.r1_gamma: 0")
            return self


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
