"""The training core: one trainer for every task, and the per-worker loop, with no dependency on Ray.

    from gan.tasks import make_task
    from gan.training import GANTrainer, fit

    task = make_task(params, manifest)                  # what kind of GAN (model.task)
    summary = fit(params, "data/prepared", task=task, rank=0, world_size=1, device="cpu",
                  report=lambda metrics, ckpt: ..., eval_fn=None)

    # or step by step (a Ray Tune function trial, PBT):
    trainer = GANTrainer(params, "data/prepared", task=task)
    trainer.load_state_dict(ckpt.state)          # resume
    trainer.set_hparams(lr_G=1e-4, lr_D=4e-4)    # PBT's mutated values, after the restore
    metrics = trainer.train_step()               # the task's phases, then EMA

The trainer knows no GAN: it builds the task's networks (a dict) and optimisers (a
dict), wraps them for DDP, lets the task set step-dependent network state
(``before_step``), runs the task's phases in order (freezing what a phase does not
train), calls the task's ``after_step`` when it has one (rank-averaged metrics), keeps
the EMA copies, feeds the divergence guard with the task's health
signal, and saves/restores all networks, optimisers, phase counters, the task's own
state and the RNG. It imports only the task contract (:mod:`gan.tasks.base`).

At report boundaries (every ``log_every``/``checkpoint_every``/``eval_every`` steps and
the last step) the loop checks the guard, averages metrics over the window and over
ranks, makes a sample grid (``sample_every``), evaluates (``eval_every``), and hands
``report(metrics, checkpoint)`` a :class:`TrainCheckpoint` every ``checkpoint_every``
steps and at the end. Rank-0-only side effects (printing, samples, evaluation,
holding the checkpoint) sit behind one flag, ``chief``.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gan.config import Params
from gan.ema import update_ema
from gan.errors import GanError
from gan.tasks.base import Batch, Task
from gan.training.checkpoint import TrainCheckpoint
from gan.training.guard import DivergenceGuard
from gan.training.reporting import (
    MetricWindow,
    Throughput,
    distributed,
    due,
    is_boundary,
    progress_every,
    progress_line,
    timed,
)
from gan.training.settings import with_train
from gan.training.steps import NetworkSet, run_phase

STATE_FORMAT = "gan-train-state/2"
# Why forward_sync_buffers=False (formerly broadcast_buffers=False): D runs twice (real,
# fake) before one backward(); a buffer broadcast in the second forward would modify
# BatchNorm buffers the first one saved. Buffers are still synced once, when wrapping;
# after that each rank keeps its own BatchNorm running statistics (as with per-GPU BN).
DDP_KWARGS: dict[str, Any] = {"forward_sync_buffers": False}
EMA_RAMPUP = 10  # EMA decay ramps as (1 + t) / (10 + t): early G_ema forgets the random init

Wrap = Callable[[nn.Module], nn.Module]
Report = Callable[[dict[str, float], TrainCheckpoint | None], None]
EvalFn = Callable[[dict[str, nn.Module], int], dict[str, float]]  # (exported networks, step) -> metrics


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel or Opacus GradSampleModule wrapper (or the module itself)."""
    if isinstance(module, DistributedDataParallel):
        return unwrap(module.module)
    inner = getattr(module, "_module", None)  # opacus.GradSampleModule
    return unwrap(inner) if isinstance(inner, nn.Module) and hasattr(module, "enable_hooks") else module


def ddp_wrap(device: torch.device) -> Wrap:
    """Plain DDP with :data:`DDP_KWARGS` (the default wrap when torch.distributed is up)."""

    def wrap(module: nn.Module) -> nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, **DDP_KWARGS)

    return wrap


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay used after step ``step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (EMA_RAMPUP + step))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s RNG stream (z, augmentation): distinct per rank."""
    return (int(seed) * 1_000_003 + 7919 * (rank + 1)) % (2**63)


class GANTrainer:
    """A task's networks, EMA copies, optimisers and this rank's data stream; one step per call.

    ``wrap`` turns a module into its distributed form (``ray.train.torch.prepare_model``
    or :func:`ddp_wrap`); by default plain DDP when torch.distributed runs with more than
    one rank, else the identity. Networks are built identically on every rank (seeded by
    ``train.seed``); DDP also broadcasts rank 0's weights when wrapping. Networks without
    parameters to train in any phase are not wrapped.
    """

    def __init__(
        self,
        params: Params,
        data_dir: str | os.PathLike,
        *,
        task: Task,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        wrap: Wrap | None = None,
    ) -> None:
        self.params, self.data_dir, self.task = params, data_dir, task
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        cfg = params.train
        self.manifest = task.manifest
        on_gpu = self.device.type == "cuda"
        self.channels_last = on_gpu and cfg.channels_last and task.channels_last
        self.amp_dtype = torch.bfloat16 if on_gpu and cfg.mixed_precision == "bf16" else None

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        raw = {name: self._to_device(net) for name, net in task.build_networks().items()}
        self.network_specs = task.network_specs()
        self.ema = {copy_name: copy.deepcopy(raw[src]).eval().requires_grad_(False) for copy_name, src in task.ema.items()}
        if wrap is None:
            wrap = ddp_wrap(self.device) if distributed() else (lambda m: m)
        self.opt_specs = task.optimizers()
        trained = {n for spec in self.opt_specs.values() for n in spec.networks}
        # DP-SGD (train.privacy) on the networks of private optimisers: per-sample gradient
        # hooks instead of DDP (the private optimiser reduces the noised gradients itself)
        self.dp = self._dp_training(params, task, world_size)
        private = {n for spec in self.opt_specs.values() if spec.private for n in spec.networks} if self.dp else set()
        wrapped = {name: self.dp.wrap(net, name) if name in private else wrap(net) if name in trained else net  # type: ignore[union-attr]
                   for name, net in raw.items()}  # fmt: skip
        self.nets = NetworkSet(raw={name: unwrap(w) for name, w in wrapped.items()}, wrapped=wrapped)
        torch.manual_seed(rank_seed(cfg.seed, rank))  # per-rank stream for z and augmentation
        self.optimizers = {
            name: torch.optim.Adam([p for n in spec.networks for p in self.nets.raw[n].parameters()], lr=spec.lr, betas=spec.betas)
            for name, spec in self.opt_specs.items()
        }
        if self.dp is not None:
            for name, spec in self.opt_specs.items():
                if spec.private:
                    self.optimizers[name] = self.dp.optimizer(self.optimizers[name], expected_batch_size=cfg.batch_size)
        # bf16 needs no loss scaling; the scaler is kept (disabled) so that checkpoints
        # have one format whatever the precision.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        self.step = 0  # training steps done
        self.batches_seen = 0  # batches this rank has consumed (the data position)
        self.phase_counts: dict[str, int] = {}  # times each phase came up (lazy regularisation)
        self._batches = self._data_stream(consumed=0)

    @staticmethod
    def _dp_training(params: Params, task: Task, world_size: int) -> Any:
        """The run's DP-SGD (:class:`gan.training.privacy.DPTraining`) when train.privacy is on, else None.

        Sample rate: real images per private step over the training set. The private
        optimiser's steps over the run: its phases per training step times train.steps.
        """
        cfg = params.train
        if not cfg.privacy.enabled:
            return None
        from gan.training.privacy import DPTraining

        specs = task.optimizers()
        per_step = sum(1 for phase in task.phases(0) if specs[phase.optimizer].private)
        count = int(task.manifest["counts"]["train"]["total"])
        return DPTraining.create(cfg.privacy, sample_rate=min(1.0, cfg.batch_size * world_size / count),
                                 private_steps=max(1, per_step * cfg.steps), distributed=world_size > 1)  # fmt: skip

    def privacy_metrics(self) -> dict[str, float]:
        """``privacy/epsilon`` (and its noise and delta) under DP-SGD; nothing otherwise."""
        return self.dp.metrics() if self.dp is not None else {}

    def _to_device(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    # ---- convenient names -------------------------------------------------------------

    @property
    def G_ema(self) -> nn.Module:
        """The first exported network (the generate task's G_ema)."""
        return self.network(next(iter(self.task.exported.values())))

    def exported_networks(self) -> dict[str, nn.Module]:
        """``{export name: network}`` as the export will hold them (EMA copies where the task exports them)."""
        return {name: self.network(src) for name, src in self.task.exported.items()}

    def network(self, name: str) -> nn.Module:
        """A network or EMA copy by name (raw module, never the DDP wrapper)."""
        return self.ema[name] if name in self.ema else self.nets.raw[name]

    # ---- the recipe -------------------------------------------------------------------

    def train_step(self) -> dict[str, torch.Tensor]:
        """The task's copies and phases for this step, then the EMA copies. Scalar metric tensors (no host sync)."""
        out: dict[str, torch.Tensor] = {}
        batch: Batch = {}
        self._apply_lr_scale()
        for dst, src in self.task.copies(self.step).items():  # weights only: optimiser states stay
            self.network(dst).load_state_dict(self.network(src).state_dict())
        self.task.before_step({**self.nets.raw, **self.ema}, self.step)
        for phase in self.task.phases(self.step):
            count = self.phase_counts.get(phase.name, 0)
            self.phase_counts[phase.name] = count + 1
            if phase.fetch:
                batch = self._next_batch()
            if count % phase.every:
                continue
            spec = self.opt_specs[phase.optimizer]
            out.update(run_phase(
                phase, self.nets, spec.networks, self.optimizers[phase.optimizer], batch,
                device=self.device, step=self.step, count=count, amp_dtype=self.amp_dtype, channels_last=self.channels_last,
            ))  # fmt: skip
        if type(self.task).after_step is not Task.after_step:  # a task acting on its networks (GANomaly's D reset)
            out.update(self.task.after_step(self.nets.raw, rank_mean(out) if distributed() else out, self.step))
        decay = ema_decay_at(self.step, self.params.train.ema_decay)
        for copy_name, src in self.task.ema.items():
            update_ema(self.ema[copy_name], self.nets.raw[src], decay)
        self.step += 1
        return out

    def _apply_lr_scale(self) -> None:
        scale = self.task.lr_scale(self.step)
        for name, factor in scale.items():
            for group in self.optimizers[name].param_groups:
                group["lr"] = self.opt_specs[name].lr * factor

    def _data_stream(self, consumed: int) -> Iterator[Batch]:
        """This rank's endless batches, positioned after ``consumed`` batches (the task's stream)."""
        return self.task.batches(self.data_dir, self.rank, self.world_size, consumed)

    def _next_batch(self) -> Batch:
        batch = next(self._batches)
        self.batches_seen += 1
        out: Batch = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if self.channels_last and value.dim() == 4 and value.is_floating_point():
                    value = value.contiguous(memory_format=torch.channels_last)
            out[key] = value
        return out

    # ---- hyper-parameters (PBT) -------------------------------------------------------

    def set_lrs(self, lr_G: float, lr_D: float) -> None:
        """Set both learning rates in the optimisers (and in the recorded config)."""
        self.set_hparams(lr_G=lr_G, lr_D=lr_D)

    def set_hparams(self, **changes: Any) -> None:
        """Apply changes of the task's mutable train.* keys (``lr_G``, ``lr_D``, ``beta1``, ...) to the running training.

        Call after :meth:`load_state_dict`: restoring an optimiser restores its old values.
        """
        allowed = set(self.task.mutable)
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} during training; allowed: {sorted(allowed)}")
        self.params = with_train(self.params, **changes)  # validated like params.yaml
        self.task.params = self.params
        self.opt_specs = self.task.optimizers()
        for name, spec in self.opt_specs.items():
            for group in self.optimizers[name].param_groups:
                group["lr"], group["betas"] = spec.lr, spec.betas
        self._apply_lr_scale()

    def hparams(self) -> dict[str, float]:
        """The values in effect: ``lr_<optimiser>`` for each optimiser, and ``n_critic`` where the config has it."""
        out = {f"lr_{name}": float(opt.param_groups[0]["lr"]) for name, opt in self.optimizers.items()}
        if "n_critic" in self.task.mutable:
            out["n_critic"] = float(self.params.train.n_critic)
        return out

    # ---- state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as CPU tensors and plain types.

        Collective under torch.distributed: every rank must call it (the RNG states of
        all ranks are gathered). The returned dict is a copy, safe to keep.
        """
        state = {
            "format": STATE_FORMAT,
            "task": self.task.name,
            "step": self.step,
            "batches_seen": self.batches_seen,
            "phase_counts": dict(self.phase_counts),
            "world_size": self.world_size,
            "networks": self.network_specs,
            "nets": {name: self.network(name).state_dict() for name in [*self.nets.raw, *self.ema]},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "task_state": self.task.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": gather_rng_states(self.device),
            "config": self.params.model_dump(mode="json"),
        }
        if self.dp is not None:
            state["privacy"] = self.dp.state_dict()  # the accountant: a resumed run keeps its epsilon
        return _to_cpu(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (this rank takes its own RNG state and data position)."""
        if state.get("format") != STATE_FORMAT:
            raise GanError(f"checkpoint format {state.get('format')!r} is not {STATE_FORMAT!r}; start the run afresh.")
        if state.get("task") != self.task.name or state["networks"] != self.network_specs:
            raise GanError("the checkpoint was made for a different model (model section or data changed); start the run afresh.")
        for name, weights in state["nets"].items():
            self.network(name).load_state_dict(weights)
        for name, opt_state in state["optimizers"].items():
            self.optimizers[name].load_state_dict(opt_state)
        self.task.load_state_dict(state.get("task_state", {}))
        if self.dp is not None:
            self.dp.load_state_dict(state.get("privacy", {}))
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.batches_seen = int(state["step"]), int(state["batches_seen"])
        self.phase_counts = {k: int(v) for k, v in state["phase_counts"].items()}
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            set_rng_state(rngs[self.rank], self.device)
        else:  # a different world size: a fresh, still deterministic stream per rank
            torch.manual_seed(rank_seed(self.params.train.seed + self.step, self.rank))
        self._batches = self._data_stream(consumed=self.batches_seen)

    # ---- rank-0 helpers ---------------------------------------------------------------

    @torch.no_grad()
    def sample_grid(self, seed: int = 0) -> bytes:
        """PNG bytes of the task's picture of the exported network (gan.grid's layout)."""
        from gan.grid import grid_png

        images, nrow = self.task.grid(self.exported_networks(), seed=seed)  # [N, C, H, W] in [-1, 1]
        return grid_png(images, nrow)

    def replica_checksums(self) -> list[list[float]]:
        """Per rank, the float64 sums of every network's and EMA copy's parameters (collective).

        Equal rows mean the replicas hold the same weights: DDP synchronised them.
        """
        own = torch.stack([_param_sum(self.network(n)) for n in [*self.nets.raw, *self.ema]]).to(self.device)  # [K]
        if not distributed():
            return [own.tolist()]
        rows = [torch.zeros_like(own) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, own)
        return [r.tolist() for r in rows]


def rank_mean(metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scalar metric tensors averaged over ranks (collective): the same values everywhere."""
    names = sorted(metrics)
    values = torch.stack([metrics[n].detach().float() for n in names])  # [K]
    dist.all_reduce(values)
    return dict(zip(names, values / dist.get_world_size(), strict=True))


def _param_sum(module: nn.Module) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in module.parameters()]).sum()


def gather_rng_states(device: torch.device) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (collective under torch.distributed)."""
    own = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(device)
    if not distributed():
        return [own]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, {k: v.cpu() for k, v in own.items()})
    return everyone


def set_rng_state(rng: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


def _to_cpu(obj: Any) -> Any:
    """A deep copy of ``obj`` with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# ---- the per-worker loop ------------------------------------------------------------


class Boundary:
    """What happens at a report boundary, in order: guard, window means, sample grid,
    evaluation, checkpoint, history and progress line, report.

    Holds the run's history and sample grids (rank 0's); every rank calls it at the same
    steps, since the guard check, the metric all-reduce and ``state_dict`` are collective.
    """

    def __init__(self, trainer: GANTrainer, *, chief: bool, start: TrainCheckpoint | None, world_size: int,
                 eval_fn: EvalFn | None, report: Report | None, log: Callable[[str], None] | None) -> None:  # fmt: skip
        self.trainer, self.cfg, self.chief = trainer, trainer.params.train, chief
        self.eval_fn, self.report, self.log = eval_fn, report, log
        self.history: list[dict[str, float]] = list(start.history) if start else []
        self.samples: dict[str, bytes] = dict(start.samples) if start else {}
        self.guard = DivergenceGuard(self.cfg.divergence_patience, saturates=trainer.task.saturates, device=trainer.device)
        self.window = MetricWindow()
        self.clock = Throughput(self.cfg.batch_size * trainer.task.batches_per_step() * world_size)  # real images shown per step

    def add(self, out: dict[str, torch.Tensor]) -> None:
        """Record one step's metric tensors (no host sync)."""
        self.guard.update(*self.trainer.task.health(out))
        self.window.add(out)

    def __call__(self, step: int, steps_in_window: int) -> dict[str, float]:
        cfg, trainer, chief = self.cfg, self.trainer, self.chief
        self.guard.check(step)  # every rank raises at the same step
        metrics = {**self.window.mean(), "step": float(step), "throughput/img_s": self.clock.window(steps_in_window), **trainer.hparams(),
                   **trainer.privacy_metrics()}  # fmt: skip
        if chief and due(step, cfg.sample_every, cfg.steps):
            self.samples[f"step-{step:07d}.png"] = trainer.sample_grid(seed=cfg.seed)
        if chief and self.eval_fn is not None and due(step, cfg.eval_every, cfg.steps):
            scores, wall, cpu = timed(self.eval_fn, trainer.exported_networks(), step)
            metrics.update(scores)
            self.clock.exclude(wall, cpu)
        ckpt = None
        if due(step, cfg.checkpoint_every, cfg.steps):
            state = trainer.state_dict()  # collective: every rank takes part
            ckpt = TrainCheckpoint(state=state, history=[*self.history, metrics], samples=dict(self.samples)) if chief else None
        primary = trainer.task.metric.primary
        if chief:
            self.history.append(metrics)
            if self.log is not None and (due(step, progress_every(cfg), cfg.steps) or primary in metrics):
                self.log(progress_line(metrics, cfg.steps, primary))
        if self.report is not None:
            self.report(metrics, ckpt)
        return metrics


def fit(
    params: Params,
    data_dir: str | os.PathLike,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    start: TrainCheckpoint | None = None,
    report: Report | None = None,
    should_stop: Callable[[dict[str, float]], bool] | None = None,
    eval_fn: EvalFn | None = None,
    wrap: Wrap | None = None,
    log: Callable[[str], None] | None = print,
    trainer: GANTrainer | None = None,
    task: Task | None = None,
) -> dict[str, Any]:
    """Train to ``train.steps`` G steps (from ``start`` when given); return a summary.

    ``report(metrics, checkpoint)`` is called on every rank at every boundary with the
    same (rank-averaged) metrics; ``checkpoint`` is a :class:`TrainCheckpoint` on rank 0
    every ``checkpoint_every`` steps and at the end, else None. ``eval_fn(nets, step)`` (``nets``:
    the exported networks, e.g. ``{"G": G_ema}``)
    runs on rank 0 every ``eval_every`` steps and at the end; its metrics (``fid``, ...)
    join rank 0's report. ``should_stop(metrics)`` ends training early (it must answer
    the same on every rank). Raises :class:`gan.errors.DivergenceError` on every rank
    at the same step when the guard trips. ``trainer`` reuses an existing GANTrainer;
    otherwise one is built for ``task`` (one of the two is required).

    Summary: ``step``, ``start_step``, ``throughput/img_s`` and
    ``throughput/img_per_cpu_s`` (steady state: the first window is warm-up), ``wall_s``,
    ``first_step_unix``, ``last`` (final metrics), ``replica_checksums``.
    """
    cfg = params.train
    chief = rank == 0  # the one flag behind which rank-0-only side effects sit
    if trainer is None:
        if task is None:
            raise ValueError("fit needs a task (gan.tasks.make_task) or a trainer")
        trainer = GANTrainer(params, data_dir, task=task, rank=rank, world_size=world_size, device=device, wrap=wrap)
    if start is not None:
        trainer.load_state_dict(start.state)
    start_step = trainer.step
    boundary = Boundary(trainer, chief=chief, start=start, world_size=world_size, eval_fn=eval_fn, report=report, log=log)
    first_step_unix, steps_in_window = None, 0
    last: dict[str, float] = {}

    while trainer.step < cfg.steps:
        out = trainer.train_step()  # the task's phases (batch -> D step(s) -> G step), then EMA
        boundary.add(out)
        steps_in_window += 1
        first_step_unix = first_step_unix or time.time()
        if not is_boundary(trainer.step, cfg.steps, cfg):
            continue
        last = boundary(trainer.step, steps_in_window)
        steps_in_window = 0
        if should_stop is not None and should_stop(last):
            break

    return {
        "step": trainer.step,
        "start_step": start_step,
        **boundary.clock.summary(fallback_img_s=last.get("throughput/img_s", 0.0)),
        "first_step_unix": first_step_unix,
        "last": last,
        "replica_checksums": trainer.replica_checksums(),
    }
