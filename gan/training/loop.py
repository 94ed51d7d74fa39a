"""The training core: a GAN trainer and the per-worker loop, with no dependency on Ray.

    from gan.training import GANTrainer, fit

    # the recipe on one worker or many (torch.distributed initialised by the caller)
    summary = fit(params, "data/prepared", rank=0, world_size=1, device="cpu",
                  report=lambda metrics, ckpt: ..., eval_fn=None)

    # or step by step (a Ray Tune function trial, PBT):
    trainer = GANTrainer(params, "data/prepared")
    trainer.load_state_dict(ckpt.state)          # resume
    trainer.set_hparams(lr_G=1e-4, lr_D=4e-4)    # PBT's mutated values, after the restore
    metrics = trainer.train_step()               # n_critic D steps, one G step, EMA

Each G step: fetch batch -> D step(s) -> G step -> EMA. At report boundaries (every
``log_every``/``checkpoint_every``/``eval_every`` steps and the last step) the loop
checks the divergence guard, averages metrics over the window and over ranks, makes
a sample grid (``sample_every``), evaluates (``eval_every``), and hands
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
from gan.data import ShardedBatches, read_manifest
from gan.ema import update_ema
from gan.errors import GanError
from gan.losses import loss_pair
from gan.models import build_D, build_G, model_kwargs
from gan.training.checkpoint import TrainCheckpoint
from gan.training.guard import DivergenceGuard
from gan.training.settings import with_train
from gan.training.steps import GANParts, d_step, g_step

STATE_FORMAT = "gan-train-state/1"
# Why forward_sync_buffers=False (formerly broadcast_buffers=False): D runs twice (real,
# fake) before one backward(); a buffer broadcast in the second forward would modify
# BatchNorm buffers the first one saved. Buffers are still synced once, when wrapping;
# after that each rank keeps its own BatchNorm running statistics (as with per-GPU BN).
DDP_KWARGS: dict[str, Any] = {"forward_sync_buffers": False}
EMA_RAMPUP = 10  # G_ema's decay ramps as (1 + t) / (10 + t): early G_ema forgets the random init

Wrap = Callable[[nn.Module], nn.Module]
Report = Callable[[dict[str, float], TrainCheckpoint | None], None]
EvalFn = Callable[[nn.Module, int], dict[str, float]]


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def ddp_wrap(device: torch.device) -> Wrap:
    """Plain DDP with :data:`DDP_KWARGS` (the default wrap when torch.distributed is up)."""

    def wrap(module: nn.Module) -> nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, **DDP_KWARGS)

    return wrap


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay used after G step ``step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (EMA_RAMPUP + step))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s RNG stream (z, augmentation): distinct per rank."""
    return (int(seed) * 1_000_003 + 7919 * (rank + 1)) % (2**63)


class GANTrainer:
    """G, D, G_ema, their optimisers and this rank's data stream; one G step per call.

    ``wrap`` turns a module into its distributed form (``ray.train.torch.prepare_model``
    or :func:`ddp_wrap`); by default plain DDP when torch.distributed runs with more than
    one rank, else the identity. Models are built identically on every rank (seeded by
    ``train.seed``); DDP also broadcasts rank 0's weights when wrapping.
    """

    def __init__(
        self,
        params: Params,
        data_dir: str | os.PathLike,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
        wrap: Wrap | None = None,
    ) -> None:
        self.params, self.data_dir = params, data_dir
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        cfg = params.train
        manifest = read_manifest(data_dir)
        self.manifest = manifest
        self.G_kwargs, self.D_kwargs = model_kwargs(params.model, manifest["channels"], manifest["image_size"], manifest["num_classes"])
        on_gpu = self.device.type == "cuda"
        self.channels_last = on_gpu and cfg.channels_last and params.model.arch != "mlp"

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        G_raw = build_G(params.model.arch, **self.G_kwargs).to(self.device)
        D_raw = build_D(params.model.arch, **self.D_kwargs).to(self.device)
        if self.channels_last:
            G_raw, D_raw = G_raw.to(memory_format=torch.channels_last), D_raw.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(G_raw).eval().requires_grad_(False)
        if wrap is None:
            wrap = ddp_wrap(self.device) if distributed() else (lambda m: m)
        G, D = wrap(G_raw), wrap(D_raw)
        torch.manual_seed(rank_seed(cfg.seed, rank))  # per-rank stream for z and augmentation

        betas = (cfg.beta1, cfg.beta2)
        d_loss_fn, g_loss_fn = loss_pair(params.model.loss)
        info = params.model.infogan
        self.parts = GANParts(
            G=G,
            D=D,
            G_raw=unwrap(G),
            D_raw=unwrap(D),
            opt_G=torch.optim.Adam(unwrap(G).parameters(), lr=cfg.lr_G, betas=betas),
            opt_D=torch.optim.Adam(unwrap(D).parameters(), lr=cfg.lr_D, betas=betas),
            d_loss_fn=d_loss_fn,
            g_loss_fn=g_loss_fn,
            loss=params.model.loss,
            z_dim=int(self.G_kwargs["z_dim"]),
            device=self.device,
            gp_weight=cfg.gp_weight,
            r1_gamma=cfg.r1_gamma,
            r1_interval=cfg.r1_interval,
            diffaugment=cfg.diffaugment,
            info_categorical=info.categorical,
            info_continuous=info.continuous,
            info_weight=info.weight if info.categorical + info.continuous else 0.0,
            amp_dtype=torch.bfloat16 if on_gpu and cfg.mixed_precision == "bf16" else None,
            channels_last=self.channels_last,
        )
        # bf16 needs no loss scaling; the scaler is kept (disabled) so that checkpoints
        # have one format whatever the precision.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        self.n_critic = cfg.n_critic
        self.step = 0  # G steps done
        self.d_steps = 0  # D steps done (= real batches consumed by this rank)
        self._batches = self._data_stream(consumed=0)

    # ---- the recipe -------------------------------------------------------------

    def train_step(self) -> dict[str, torch.Tensor]:
        """n_critic D steps, one G step, EMA. Returns scalar metric tensors (no host sync)."""
        out: dict[str, torch.Tensor] = {}
        for _ in range(self.n_critic):
            real, y = self._next_batch()  # [B, C, H, W], [B] | None
            out = d_step(self.parts, real, y, self.d_steps)
            self.d_steps += 1
        out.update(g_step(self.parts, y, real.shape[0]))
        update_ema(self.G_ema, self.parts.G_raw, ema_decay_at(self.step, self.params.train.ema_decay))
        self.step += 1
        return out

    def _data_stream(self, consumed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """This rank's endless batches, positioned after ``consumed`` batches.

        The stream restarts at the epoch holding that position and skips the batches
        of it already seen: resuming re-reads at most one epoch of this rank's share.
        """
        cfg = self.params.train
        source = ShardedBatches(self.data_dir, "train", cfg.batch_size, self.rank, self.world_size, cfg.seed)
        source.epoch, skip = divmod(consumed, source.batches_per_epoch)
        stream = iter(source)
        for _ in range(skip):
            next(stream)
        return stream

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = next(self._batches)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if y is not None:
            y = y.to(self.device, non_blocking=True) if self.G_kwargs["num_classes"] else None
        return x, y

    # ---- hyper-parameters (PBT) -------------------------------------------------

    def set_lrs(self, lr_G: float, lr_D: float) -> None:
        """Set both learning rates in the optimisers (and in the recorded config)."""
        self.set_hparams(lr_G=lr_G, lr_D=lr_D)

    def set_hparams(self, **changes: Any) -> None:
        """Apply ``lr_G``, ``lr_D``, ``beta1``, ``beta2`` or ``n_critic`` to the running training.

        Call after :meth:`load_state_dict`: restoring an optimiser restores its old values.
        """
        allowed = {"lr_G", "lr_D", "beta1", "beta2", "n_critic"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} during training; allowed: {sorted(allowed)}")
        self.params = with_train(self.params, **changes)  # validated like params.yaml
        cfg = self.params.train
        for opt, lr in ((self.parts.opt_G, cfg.lr_G), (self.parts.opt_D, cfg.lr_D)):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (cfg.beta1, cfg.beta2)
        self.n_critic = cfg.n_critic

    def hparams(self) -> dict[str, float]:
        """The values in effect: ``lr_G``, ``lr_D``, ``n_critic`` (logged with every report)."""
        return {
            "lr_G": float(self.parts.opt_G.param_groups[0]["lr"]),
            "lr_D": float(self.parts.opt_D.param_groups[0]["lr"]),
            "n_critic": float(self.n_critic),
        }

    # ---- state ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as CPU tensors and plain types.

        Collective under torch.distributed: every rank must call it (the RNG states of
        all ranks are gathered). The returned dict is a copy, safe to keep.
        """
        p = self.parts
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "d_steps": self.d_steps,
            "world_size": self.world_size,
            "arch": self.params.model.arch,
            "G_kwargs": self.G_kwargs,
            "D_kwargs": self.D_kwargs,
            "G": p.G_raw.state_dict(),
            "D": p.D_raw.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": p.opt_G.state_dict(),
            "opt_D": p.opt_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": gather_rng_states(self.device),
            "config": self.params.model_dump(mode="json"),
        }
        return _to_cpu(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (this rank takes its own RNG state and data position)."""
        if state.get("format") != STATE_FORMAT:
            raise GanError(f"checkpoint format {state.get('format')!r} is not {STATE_FORMAT!r}; start the run afresh.")
        if state["arch"] != self.params.model.arch or state["G_kwargs"] != self.G_kwargs or state["D_kwargs"] != self.D_kwargs:
            raise GanError("the checkpoint was made for a different model (model section or data changed); start the run afresh.")
        p = self.parts
        p.G_raw.load_state_dict(state["G"])
        p.D_raw.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        p.opt_G.load_state_dict(state["opt_G"])
        p.opt_D.load_state_dict(state["opt_D"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.d_steps = int(state["step"]), int(state["d_steps"])
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            set_rng_state(rngs[self.rank], self.device)
        else:  # a different world size: a fresh, still deterministic stream per rank
            torch.manual_seed(rank_seed(self.params.train.seed + self.step, self.rank))
        self._batches = self._data_stream(consumed=self.d_steps)

    # ---- rank-0 helpers -----------------------------------------------------------

    @torch.no_grad()
    def sample_grid(self, seed: int = 0) -> bytes:
        """PNG bytes of G_ema on fixed latents (gan.grid's layout: one row per class)."""
        from gan.grid import grid_png, sample_grid

        images, nrow = sample_grid(self.G_ema, seed=seed)  # [N, C, H, W] in [-1, 1]
        return grid_png(images, nrow)

    def replica_checksums(self) -> list[list[float]]:
        """Per rank, the float64 sums of G's, D's and G_ema's parameters (collective).

        Equal rows mean the replicas hold the same weights: DDP synchronised them.
        """
        own = torch.stack([
            _param_sum(self.parts.G_raw),
            _param_sum(self.parts.D_raw),
            _param_sum(self.G_ema),
        ]).to(self.device)  # [3]
        if not distributed():
            return [own.tolist()]
        rows = [torch.zeros_like(own) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, own)
        return [r.tolist() for r in rows]


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


class MetricWindow:
    """Sums metric tensors on the device between reports; one all-reduce per report."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def mean(self) -> dict[str, float]:
        """Means over the window and over ranks (every rank gets the same numbers)."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k] / self.counts[k] for k in keys])  # [K]
        if distributed():
            dist.all_reduce(values)
            values /= dist.get_world_size()
        self.sums, self.counts = {}, {}
        return dict(zip(keys, values.tolist(), strict=True))


def due(step: int, every: int, total: int) -> bool:
    """Whether something done every ``every`` steps (0 = never) and at the end is due."""
    return step == total or bool(every and step % every == 0)


def progress_every(cfg: Any) -> int:
    """Steps between console progress lines: about ten per run, never finer than ``log_every``.

    history.csv keeps every ``log_every`` row; the console only needs to show that the
    run is alive and where it stands.
    """
    if not cfg.log_every:
        return 0
    tenth = cfg.steps // 10
    return max(cfg.log_every, tenth - tenth % cfg.log_every)  # a multiple of log_every


def is_boundary(step: int, total: int, cfg: Any) -> bool:
    """Whether the loop reports after G step ``step``."""
    return any(due(step, every, total) for every in (cfg.log_every, cfg.checkpoint_every, cfg.eval_every))


class Throughput:
    """Wall and CPU clocks over report windows; the steady state leaves out the first window.

    A window runs from the end of the previous report (minus its evaluation time: the
    figure is training throughput, boundary overhead such as reports and checkpoints
    included) to the current boundary.
    """

    def __init__(self, images_per_step: int) -> None:
        self.images_per_step = images_per_step
        self.started = time.perf_counter()
        self.wall, self.cpu = self.started, time.process_time()
        self.windows = 0
        self.steady = {"images": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}

    def window(self, steps: int) -> float:
        """img/s of the window of ``steps`` G steps ending now."""
        wall, cpu = time.perf_counter(), time.process_time()
        images = self.images_per_step * steps
        if self.windows:  # the first window (start-up, warm-up) is not steady state
            self.steady["images"] += images
            self.steady["seconds"] += wall - self.wall
            self.steady["cpu_seconds"] += cpu - self.cpu
        self.windows += 1
        img_s = images / max(wall - self.wall, 1e-9)
        self.wall, self.cpu = wall, cpu
        return img_s

    def exclude(self, wall_seconds: float, cpu_seconds: float) -> None:
        """Leave time spent since the last window (an evaluation) out of the next one."""
        self.wall += wall_seconds
        self.cpu += cpu_seconds

    def summary(self, fallback_img_s: float) -> dict[str, float | None]:
        st = self.steady
        return {
            "throughput/img_s": st["images"] / st["seconds"] if st["seconds"] > 0 else fallback_img_s,
            # per CPU second of this process: insensitive to other load on a shared machine
            "throughput/img_per_cpu_s": st["images"] / st["cpu_seconds"] if st["cpu_seconds"] > 0 else None,
            "wall_s": time.perf_counter() - self.started,
        }


def progress_line(metrics: dict[str, float], total: int) -> str:
    """``step 50/1500 | loss/D 1.234 | loss/G 0.876 | D(x) 0.62 | D(G(z)) 0.38 | 410 img/s``."""
    parts = [f"step {int(metrics['step'])}/{total}"]
    for key in ("loss/D", "loss/G", "D(x)", "D(G(z))"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.3f}")
    if "fid" in metrics:
        parts.append(f"fid {metrics['fid']:.2f}")
    parts.append(f"{metrics.get('throughput/img_s', 0.0):.0f} img/s")
    return " | ".join(parts)


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """``fn(*args)`` with the wall and CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


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
) -> dict[str, Any]:
    """Train to ``train.steps`` G steps (from ``start`` when given); return a summary.

    ``report(metrics, checkpoint)`` is called on every rank at every boundary with the
    same (rank-averaged) metrics; ``checkpoint`` is a :class:`TrainCheckpoint` on rank 0
    every ``checkpoint_every`` steps and at the end, else None. ``eval_fn(G_ema, step)``
    runs on rank 0 every ``eval_every`` steps and at the end; its metrics (``fid``, ...)
    join rank 0's report. ``should_stop(metrics)`` ends training early (it must answer
    the same on every rank). Raises :class:`gan.errors.DivergenceError` on every rank
    at the same step when the guard trips. ``trainer`` reuses an existing GANTrainer.

    Summary: ``step``, ``start_step``, ``throughput/img_s`` and
    ``throughput/img_per_cpu_s`` (steady state: the first window is warm-up), ``wall_s``,
    ``first_step_unix``, ``last`` (final metrics), ``replica_checksums``.
    """
    cfg = params.train
    chief = rank == 0  # the one flag behind which rank-0-only side effects sit
    trainer = trainer or GANTrainer(params, data_dir, rank=rank, world_size=world_size, device=device, wrap=wrap)
    history: list[dict[str, float]] = list(start.history) if start else []
    samples: dict[str, bytes] = dict(start.samples) if start else {}
    if start is not None:
        trainer.load_state_dict(start.state)
    start_step = trainer.step
    guard = DivergenceGuard(cfg.divergence_patience, params.model.loss, trainer.device)
    window = MetricWindow()
    clock = Throughput(cfg.batch_size * trainer.n_critic * world_size)  # real images shown to D per G step
    first_step_unix, steps_in_window = None, 0
    last: dict[str, float] = {}

    while trainer.step < cfg.steps:
        out = trainer.train_step()  # batch -> D step(s) -> G step -> EMA
        guard.update(out["loss/D"], out["loss/G"], out["D(x)"], out["D(G(z))"])
        window.add(out)
        step, steps_in_window = trainer.step, steps_in_window + 1
        first_step_unix = first_step_unix or time.time()
        if not is_boundary(step, cfg.steps, cfg):
            continue

        guard.check(step)  # every rank raises at the same step
        metrics = {**window.mean(), "step": float(step), "throughput/img_s": clock.window(steps_in_window), **trainer.hparams()}
        steps_in_window = 0
        if chief and due(step, cfg.sample_every, cfg.steps):
            samples[f"step-{step:07d}.png"] = trainer.sample_grid(seed=cfg.seed)
        if chief and eval_fn is not None and due(step, cfg.eval_every, cfg.steps):
            scores, wall, cpu = timed(eval_fn, trainer.G_ema, step)
            metrics.update(scores)
            clock.exclude(wall, cpu)
        ckpt = None
        if due(step, cfg.checkpoint_every, cfg.steps):
            state = trainer.state_dict()  # collective: every rank takes part
            ckpt = TrainCheckpoint(state=state, history=[*history, metrics], samples=dict(samples)) if chief else None
        if chief:
            history.append(metrics)
            if log is not None and (due(step, progress_every(cfg), cfg.steps) or "fid" in metrics):
                log(progress_line(metrics, cfg.steps))
        if report is not None:
            report(metrics, ckpt)
        last = metrics
        if should_stop is not None and should_stop(metrics):
            break

    return {
        "step": trainer.step,
        "start_step": start_step,
        **clock.summary(fallback_img_s=last.get("throughput/img_s", 0.0)),
        "first_step_unix": first_step_unix,
        "last": last,
        "replica_checksums": trainer.replica_checksums(),
    }
