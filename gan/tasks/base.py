"""The task contract: what a kind of GAN declares so that one trainer can train it.

    task = make_task(params, manifest)          # gan.tasks.make_task: model.task picks the class
    nets = task.build_networks()                # {"G": ..., "D": ...}: pure nn.Modules
    opts = task.optimizers()                    # {"G": OptimizerSpec(("G",), lr, betas), "D": ...}
    for dst, src in task.copies(step).items():  # snapshots a schedule needs (none by default)
        nets[dst].load_state_dict(nets[src].state_dict())
    task.before_step(nets, step)                # state a schedule sets (ProGAN's level of detail)
    for phase in task.phases(step):             # Dmain, Dreg (every k), Gmain, Greg ...
        loss, metrics = phase.loss(ctx, batch)  # ctx: the networks as this phase may use them

A task names its networks (a dict), which get an EMA copy (``ema``) and which are
exported (``exported``), its optimisers and the networks each one trains, its phases
(stylegan2-ada style: each names its optimiser, how often it runs and a pure loss on a
batch dict), the batches it consumes, its health signal for the divergence guard, the
inference module that turns an export into outputs (``gan.inference.<name>``), its
metrics with the primary one and its direction, and the learning rates tune may search.

The trainer (:mod:`gan.training.loop`) imports only this module: it handles dicts of
networks and optimisers (DDP, freezing, precision, EMA, the guard, checkpoints, resume)
and knows nothing of GANs. Phase losses receive a :class:`PhaseContext` whose networks
are the DDP-wrapped modules for the networks the phase trains and the raw, frozen
modules for all others, so a frozen network's gradients are neither computed nor
all-reduced (see :mod:`gan.training.steps`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

Batch = dict[str, Any]  # "image" [B, C, H, W], "label" [B] | None, "domain", "low_res", ...
Metrics = dict[str, torch.Tensor]  # scalar tensors, named as logged ("loss/D", "D(x)", ...)


@dataclass(frozen=True)
class OptimizerSpec:
    """An Adam optimiser over the parameters of ``networks`` (in that order).

    ``private``: its phases' losses read the private (real) data, so under
    ``train.privacy`` the trainer runs it with DP-SGD (per-sample clipping and noise,
    counted by the privacy accountant); the other optimisers see the data only through
    the private networks and inherit the guarantee as post-processing.
    """

    networks: tuple[str, ...]
    lr: float
    betas: tuple[float, float] = (0.5, 0.999)
    private: bool = False


@dataclass
class PhaseContext:
    """What a phase's loss may use: networks, device, precision, step counters."""

    nets: dict[str, nn.Module]  # wrapped (trained by this phase) or raw and frozen (all others)
    device: torch.device
    step: int  # G steps (trainer steps) done before this one
    count: int  # times this phase has come up before (its lazy-regularisation counter)
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def __getitem__(self, name: str) -> nn.Module:
        return self.nets[name]

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on GPU when mixed precision is on; a no-op otherwise."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in channels_last when the run uses it (GPU), else as it is."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


PhaseLoss = Callable[[PhaseContext, Batch], tuple[torch.Tensor, Metrics]]


@dataclass(frozen=True)
class Phase:
    """One optimiser step of a training step (Karras et al. 2020's phases: Dmain, Dreg, Gmain, Greg).

    ``optimizer`` names the optimiser stepped; its networks are trained, every other
    network is frozen. ``every``: the phase runs when its counter (times it came up) is a
    multiple of ``every`` (lazy regularisation). ``fetch``: a new batch is drawn before
    it. ``grad_norm``: the metric name of the gradient norm over the trained networks,
    or None to log none.
    """

    name: str
    optimizer: str
    loss: PhaseLoss
    every: int = 1
    fetch: bool = False
    grad_norm: str | None = None


class Health(NamedTuple):
    """The divergence guard's signal: the two losses and D's mean sigmoid outputs on real and fake."""

    loss_D: torch.Tensor
    loss_G: torch.Tensor
    d_real: torch.Tensor
    d_fake: torch.Tensor


@dataclass(frozen=True)
class MetricSpec:
    """A task's evaluation: its primary metric (what tune optimises and register gates on) and its direction.

    ``higher_is_better`` names the task's other metrics where a larger value is better
    (accuracies, PSNR): tune and register ask :meth:`lower` for whichever metric their
    params section names.
    """

    primary: str
    lower_is_better: bool = True
    names: tuple[str, ...] = field(default_factory=tuple)
    higher_is_better: tuple[str, ...] = field(default_factory=tuple)

    def lower(self, metric: str) -> bool:
        """Whether a lower ``metric`` is better."""
        if metric == self.primary:
            return self.lower_is_better
        return metric not in self.higher_is_better

    def lower_is_better_for(self, name: str) -> bool:
        """Alias of :meth:`lower` (what tune's mode and register's gate follow)."""
        return self.lower(name)

    def check(self, key: str, name: str, task: str) -> None:
        """ValueError naming ``key`` when ``name`` is not one of this task's metrics."""
        known = dict.fromkeys((self.primary, *self.names))
        if name not in known:
            raise ValueError(f"params.yaml: {key} = {name!r} is not a metric of the {task} task; use one of {', '.join(known)}.")


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation runs: sample count, seed and the metrics' knobs (params' evaluate section)."""

    num_samples: int
    seed: int = 0
    batch_size: int = 500
    nearest_k: int = 5
    kid_subset_size: int = 500


class Task:
    """Base of every task; subclasses fill in the class attributes and the methods.

    Built with the validated params and the prepared data's manifest. Everything it
    returns is plain data or pure functions: no devices, DDP or I/O beyond its batches.
    """

    name: ClassVar[str] = ""
    inference: ClassVar[str] = ""  # gan.inference.<inference>: the export's inference module
    metric: ClassVar[MetricSpec] = MetricSpec("fid")
    # train.* keys tune may search and PBT may change while training runs
    tunable: ClassVar[tuple[str, ...]] = ("lr_G", "lr_D")
    mutable: ClassVar[tuple[str, ...]] = ("lr_G", "lr_D", "beta1", "beta2")

    def __init__(self, params: Any, manifest: dict[str, Any]) -> None:
        self.params = params
        self.manifest = manifest

    def use_inputs(self, data_dir: Any, features_dir: Any) -> None:
        """Read stage inputs beyond the manifest before networks are built; nothing by default.

        Called wherever a task trains (:func:`gan.training.factory.task_for`): StackGAN
        reads featurize's text encoder and embeds the training captions here.
        """

    # ---- networks ------------------------------------------------------------------
    def network_specs(self) -> dict[str, dict[str, Any]]:
        """``{name: {"network": key in gan.models.NETWORKS, "kwargs": {...}}}``, JSON-able."""
        raise NotImplementedError

    def build_networks(self) -> dict[str, nn.Module]:
        """The networks of :meth:`network_specs`, freshly initialised (seed the RNG before).

        A network may be a part of another (StackGAN's stages are modules of its G): the
        trainer then trains the part through its own optimiser and never the whole.
        """
        from gan.models import build_network

        return {name: build_network(spec["network"], **spec["kwargs"]) for name, spec in self.network_specs().items()}

    # EMA copies: {copy name: source network}; exported networks: {export name: network}
    ema: ClassVar[dict[str, str]] = {}
    exported: ClassVar[dict[str, str]] = {}
    # networks the privacy audit reads (generate: D, for LOGAN's membership attack); the
    # train stage writes them beside the export (models/discriminator), never into it, so
    # the published model does not hand the white-box attack to its consumers
    audited: ClassVar[dict[str, str]] = {}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        raise NotImplementedError

    # ---- the recipe ------------------------------------------------------------------
    def phases(self, step: int) -> list[Phase]:
        """The phases of training step ``step``, in order (a schedule may change them with the step)."""
        raise NotImplementedError

    def copies(self, step: int) -> dict[str, str]:
        """``{destination: source}``: networks whose weights are set to another's at the start of ``step``.

        For networks no optimiser trains that keep a phase's result (the upscale task's
        PSNR-phase generator, frozen when the GAN phase starts) or initialise a stage
        from another; none by default. The copies are networks, so checkpoints keep them.
        """
        return {}

    def before_step(self, nets: dict[str, nn.Module], step: int) -> None:
        """Set the networks' step-dependent state before step ``step``; nothing by default.

        For schedules that live in the networks rather than in their weights (progressive
        growing's level of detail and fade-in): ``nets`` are the raw modules and their EMA
        copies. A pure function of ``step``, so every rank and a resumed run agree.
        """

    def lr_scale(self, step: int) -> dict[str, float]:
        """Multipliers of each optimiser's learning rate at ``step`` (a decay schedule); none by default."""
        return {}

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int) -> Iterator[Batch]:
        """This rank's endless batch stream, positioned after ``consumed`` batches."""
        raise NotImplementedError

    def health(self, metrics: Metrics) -> Health:
        raise NotImplementedError

    def after_step(self, nets: dict[str, nn.Module], metrics: Metrics, step: int) -> Metrics:
        """Act on the networks after step ``step``'s phases (GANomaly re-initialises a collapsed D); extra metrics.

        ``nets`` are the raw modules; ``metrics`` this step's phase metrics, averaged over
        ranks under DDP, so every rank takes the same decision. A change to the networks
        must be the same on every rank (seed any RNG it uses from the step). Nothing by default.
        """
        return {}

    saturates: ClassVar[bool] = True  # whether D winning outright (D(x)->1, D(G(z))->0) is a failure
    channels_last: ClassVar[bool] = True  # whether the networks may run in channels_last on GPU

    def batches_per_step(self) -> int:
        """Batches one training step consumes (for images/s): the phases that fetch one."""
        return max(1, sum(1 for phase in self.phases(0) if phase.fetch))

    def grid(self, nets: dict[str, nn.Module], seed: int = 0) -> tuple[torch.Tensor, int]:
        """``(images [N, C, H, W] in [-1, 1], nrow)``: the task's picture of its exported networks."""
        raise NotImplementedError

    # ---- evaluation (stage level: training-time evaluation, tune, evaluate, register) ------
    def evaluate(self, nets: dict[str, nn.Module], feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """The task's metrics of its exported networks (``{export name: module}``) on the validation split."""
        raise NotImplementedError

    def real_floor(self, feature_net: Any, data_dir: Any, settings: EvalSettings) -> dict[str, float]:
        """The same metrics for real data in the model's place (the real-vs-real floor)."""
        raise NotImplementedError

    # ---- state beyond networks and optimisers (image pools, ADA's p, growth) --------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    # ---- export ------------------------------------------------------------------------
    @staticmethod
    def shape_text(spec: dict[str, Any]) -> str:
        """``CxSxS`` of an export's images (``channels``, ``image_size``), for :meth:`describe`."""
        return f"{spec.get('channels', '?')}x{spec.get('image_size', '?')}x{spec.get('image_size', '?')}"

    @classmethod
    def variant(cls, spec: dict[str, Any]) -> str:
        """The architecture or method of an exported model (config.json ``spec``): the registry's ``arch`` tag."""
        return str(spec.get("arch") or cls.name)

    @classmethod
    def describe(cls, spec: dict[str, Any]) -> str:
        """One line for the registered version's description: what the exported model (``spec``) is.

        A class method on the export's own keys, so register describes any task's model
        from its config.json without rebuilding the task; every task's export has
        ``channels`` and ``image_size`` (tests/test_tasks.py checks).
        """
        return f"{cls.variant(spec)} {cls.name} model, {cls.shape_text(spec)}."

    @classmethod
    def augments(cls, spec: dict[str, Any]) -> bool:
        """Whether the exported model (``spec``) makes labelled synthetic images, what the augment_eval stage measures.

        False by default: a translator, detector or upscaler has no labelled samples of
        its own to add to a classifier's training set; augment_eval then says so and stops.
        """
        return False

    def export_spec(self) -> dict[str, Any]:
        """config.json entries beside ``task`` and ``networks`` that inference needs."""
        return {}

    def calibrate(self, nets: dict[str, nn.Module], data_dir: Any) -> dict[str, Any]:
        """config.json entries measured on the trained exported networks and the prepared data
        (the detect task's threshold at a target false-positive rate). Nothing by default."""
        return {}
