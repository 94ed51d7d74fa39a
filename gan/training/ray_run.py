"""Ray Train V2 around the training core: scaling, storage, failures, resume.

    outcome = run_training(params, "data/prepared", features_dir="models/features")
    outcome.checkpoint      # the final TrainCheckpoint (G_ema, history, samples)
    outcome.summary         # rank 0's summary (throughput, resumed_from_step, node ids, ...)

The run is named by :func:`gan.training.settings.run_name` and stored under
``train.storage_path`` (outside DVC outputs; shared storage on a multi-node cluster).
Ray Train V2 reloads a run's checkpoint list when a run of the same name starts again,
so re-running an interrupted stage resumes from its last checkpoint, and a worker
that dies restarts the group from the last checkpoint (``train.max_failures``).

``run_training(..., report_hook=fn)`` calls ``fn(rank=, step=, resumed=)`` on every
worker before each report (``resumed``: the attempt started from a checkpoint); the
fault tests use it to kill a worker at a chosen step.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan import signals
from gan.config import Params, TrainConfig, parse_params, resolve_worker_paths
from gan.errors import DivergenceError, GanError, Interrupted
from gan.training.checkpoint import TrainCheckpoint, load_checkpoint, save_checkpoint
from gan.training.factory import task_for
from gan.training.inputs import local_path, stage_inputs
from gan.training.loop import DDP_KWARGS, EvalFn, fit
from gan.training.reporting import distributed, due

if TYPE_CHECKING:  # Ray is imported lazily: the training core and its tests never need it
    from ray.train import Result, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

KEEP_CHECKPOINTS = 2
# Times Ray Train may fail to place the worker group (each wait lasts
# RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default) before the run fails. Ray's
# default is to retry forever, so a run whose node was lost, leaving too few CPUs/GPUs
# for train.num_workers, would hang instead of failing.
PLACEMENT_RETRIES = 3


@dataclass
class TrainOutcome:
    """What the driver gets back from a finished run."""

    checkpoint: TrainCheckpoint
    summary: dict[str, Any]
    run_name: str
    run_path: str
    wall_s: float
    startup_s: float | None


# ---- configuration --------------------------------------------------------------------


def scaling_config(cfg: TrainConfig) -> ScalingConfig:
    """ScalingConfig from the train section: workers, GPU, resources, placement."""
    from ray.train import ScalingConfig

    resources: dict[str, float] = {"CPU": float(cfg.cpus_per_worker)}
    if cfg.use_gpu:
        resources["GPU"] = float(cfg.gpus_per_worker)
    return ScalingConfig(
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker=resources,
        placement_strategy=cfg.placement_strategy,
    )


def torch_config(cfg: TrainConfig) -> TorchConfig:
    """gloo on CPU, nccl on GPU."""
    from ray.train.torch import TorchConfig

    return TorchConfig(backend="nccl" if cfg.use_gpu else "gloo")


def storage_uri(path: str) -> str:
    """A local storage path made absolute (Ray needs one); URIs (``s3://``, ...) as given."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def run_config(name: str, cfg: TrainConfig) -> RunConfig:
    """RunConfig: stable name, storage, FailureConfig(max_failures), quiet Ray Train logs."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.v2.api.config import LoggingConfig

    return RunConfig(
        name=name,
        storage_path=storage_uri(cfg.storage_path),
        failure_config=FailureConfig(max_failures=cfg.max_failures, controller_failure_limit=PLACEMENT_RETRIES),
        checkpoint_config=CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        logging_config=LoggingConfig(log_level="WARNING"),
    )


# ---- the per-worker function ----------------------------------------------------------


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train worker: the core :func:`fit` with DDP, checkpoints and reports wired to Ray."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    params = parse_params(config["params"], source="train_loop_config")
    cfg = params.train
    # Ray Train sets the worker's root logger to INFO and logs every report there; the
    # progress line below is the one line per report we want on the console.
    logging.getLogger().setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()
    chief = rank == 0

    start = None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as directory:
            start = load_checkpoint(directory)
    hook = config.get("report_hook")

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs=DDP_KWARGS)

    evaluating = bool(config.get("features_dir"))
    metric_only = bool(config.get("report_metric_only"))  # a Tune trial: report evaluations only

    def report(metrics: dict[str, float], ckpt: TrainCheckpoint | None) -> None:
        step = int(metrics["step"])
        if hook is not None:
            hook(rank=rank, step=step, resumed=start is not None)
        send, name = ray_report_due(step, cfg, evaluating, metric_only)
        if not send:
            return
        if ckpt is None:  # not a checkpoint step, or a rank other than 0 (report is a barrier)
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(ckpt, tmp)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)

    data_dir = local_path(config["data_dir"])  # a path, or a staged input copied to this node
    features_dir = local_path(config.get("features_dir"))
    task = task_for(params, data_dir, features_dir)
    eval_fn = make_eval_fn(params, task, data_dir, features_dir, device) if chief else None
    try:
        summary = fit(
            params,
            data_dir,
            task=task,
            rank=rank,
            world_size=world_size,
            device=device,
            start=start,
            report=report,
            eval_fn=eval_fn,
            wrap=wrap,
            log=progress,
        )
    except DivergenceError as err:
        # every rank raises at the same step; returning (not raising) keeps Ray from
        # retrying a run that would diverge again from the same checkpoint
        return {"diverged": str(err)} if chief else None
    summary["node_ids"] = all_gather_objects(ray.get_runtime_context().get_node_id())
    summary["world_size"] = world_size
    return summary if chief else None


def ray_report_due(step: int, cfg: TrainConfig, evaluating: bool, metric_only: bool = False) -> tuple[bool, str | None]:
    """Whether step ``step`` goes to ``ray.train.report``, and its checkpoint folder name.

    Only checkpoint and evaluation steps do: ``ray.train.report`` blocks until the
    controller has taken the previous report, which it polls for every 0.5 s
    (:data:`gan.ray_session.TRAIN_POLL_INTERVAL_S`; Ray's default is 2 s), so reporting
    every log step would throttle a fast loop to that rate (log rows travel inside the
    checkpoints instead). ``metric_only`` (a Tune trial) reports evaluation steps only.
    The answer depends on the step alone, so every rank agrees (the report is a barrier).
    """
    checkpoint_due = due(step, cfg.checkpoint_every, cfg.steps)
    eval_due = evaluating and due(step, cfg.eval_every, cfg.steps)
    send = eval_due if metric_only else checkpoint_due or eval_due
    return send, (f"checkpoint-{step:07d}" if checkpoint_due and send else None)


def progress(line: str) -> None:
    """One line to the worker's real stdout, which Ray streams to the driver.

    Ray Train patches print() to go through logging as well, which would show each
    line twice; writing to ``sys.__stdout__`` bypasses the patch.
    """
    sys.__stdout__.write(line + "\n")
    sys.__stdout__.flush()


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order."""
    import torch.distributed as dist

    if not distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def make_eval_fn(params: Params, task: Any, data_dir: str, features_dir: str | None, device: Any) -> EvalFn | None:
    """The task's metrics (FID & co. for generate) of the exported networks on the validation split, or None without a feature network."""
    if not features_dir or not Path(features_dir).exists():
        return None
    from gan.features import load_feature_net
    from gan.tasks.base import EvalSettings

    net = load_feature_net(features_dir, device=device)
    settings = EvalSettings(num_samples=params.train.eval_samples, seed=params.train.seed, batch_size=250)

    def evaluate(nets: Any, step: int) -> dict[str, float]:
        return task.evaluate(nets, net, data_dir, settings)

    return evaluate


# ---- the driver -----------------------------------------------------------------------


def delete_run(name: str, cfg: TrainConfig) -> None:
    """Remove a run's stored checkpoints so that the next run of that name starts afresh."""
    uri = storage_uri(cfg.storage_path)
    if "://" in uri:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        try:
            fs.delete_dir(f"{path.rstrip('/')}/{name}")
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(Path(uri) / name, ignore_errors=True)


def run_training(
    params: Params,
    data_dir: str | os.PathLike,
    *,
    name: str,
    features_dir: str | os.PathLike | None = None,
    fresh: bool = False,
    report_hook: Callable[..., None] | None = None,
) -> TrainOutcome:
    """Run (or resume) the Ray Train run ``name``; needs ``ray.init()`` done by the caller.

    Raises DivergenceError when the guard stopped training, the worker's GanError when
    an expected failure ran out of retries, else GanError naming the run's log folder.
    """
    from ray.train.torch import TorchTrainer

    from gan.ray_session import poll_ray_train_often

    cfg = params.train
    poll_ray_train_often()
    if fresh:
        delete_run(name, cfg)
    # on a cluster, workers on other nodes read the data and the feature network staged in storage
    inputs = stage_inputs({"data": data_dir, "features": features_dir}, storage_uri(cfg.storage_path))
    loop_config = {
        "params": resolve_worker_paths(params.model_dump(mode="json")),
        "data_dir": inputs["data"],
        "features_dir": inputs["features"],
        "report_hook": report_hook,
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=torch_config(cfg),
        scaling_config=scaling_config(cfg),
        run_config=run_config(name, cfg),
    )
    t0, t0_unix = time.perf_counter(), time.time()
    result = _fit(trainer, name, cfg)
    wall = time.perf_counter() - t0
    summary = result.return_value or {}
    if summary.get("diverged"):
        raise DivergenceError(summary["diverged"])
    if result.checkpoint is None:
        raise GanError(f"run {name} finished without a checkpoint; delete {storage_uri(cfg.storage_path)}/{name} and run again.")
    with result.checkpoint.as_directory() as directory:
        ckpt = load_checkpoint(directory)
    first = summary.get("first_step_unix")
    return TrainOutcome(
        checkpoint=ckpt,
        summary=summary,
        run_name=name,
        run_path=str(result.path),
        wall_s=wall,
        startup_s=(first - t0_unix) if first else None,
    )


def _fit(trainer: TorchTrainer, name: str, cfg: TrainConfig) -> Result:
    """``trainer.fit()`` with Ray's failure turned into one sentence (a worker's GanError as is)."""
    from ray.train import TrainingFailedError

    # Ray Train's own Ctrl-C handler aborts the run and then lets fit() return or exit 0/1
    # without a word; recording the signal around it lets the stage say it was interrupted
    register = getattr(trainer, "_register_sigint_handler", None)
    if register is not None:
        trainer._register_sigint_handler = signals.wrap_handler_registration(register)
    try:
        result = trainer.fit()
    except TrainingFailedError as err:
        if signals.received():
            raise _interrupted(name, cfg) from None
        cause = _gan_error_in(err)
        if cause is not None:
            raise cause from None
        where = f"{storage_uri(cfg.storage_path)}/{name}"
        if _placement_failed(err):
            need = f"{cfg.cpus_per_worker:g} CPU{f' + {cfg.gpus_per_worker:g} GPU' if cfg.use_gpu else ''}"
            raise GanError(
                f"the Ray cluster can no longer place train.num_workers = {cfg.num_workers} workers of {need} each "
                f"({cfg.placement_strategy}), e.g. after losing a node; the checkpoints under {where} are kept, "
                "so re-run the stage when the cluster has room again or lower train.num_workers (a changed worker count starts a new run)."
            ) from None
        first = str(err).strip().splitlines()
        detail = first[-1][:300] if first else type(err).__name__
        raise GanError(
            f"training failed after {cfg.max_failures} restart(s) (train.max_failures): {detail}; worker logs are under /tmp/ray/session_latest/logs and checkpoints under {where}."
        ) from None
    except BaseException:  # Ray Train's handler may end fit() with sys.exit, ours with KeyboardInterrupt
        if signals.received():
            raise _interrupted(name, cfg) from None
        raise
    if signals.received():
        raise _interrupted(name, cfg)
    return result


def _interrupted(name: str, cfg: TrainConfig) -> Interrupted:
    """The sentence for a run stopped by SIGINT/SIGTERM: nothing exported, checkpoints kept."""
    signum = signals.received() or signal.SIGINT
    return Interrupted(
        f"training was interrupted ({signals.name(signum)}); no output was written, the checkpoints under "
        f"{storage_uri(cfg.storage_path)}/{name} are kept and running the same command again resumes from the last one.",
        signum,
    )


def _placement_failed(err: BaseException) -> bool:
    """Whether Ray Train gave up because the worker group could not be placed (not a training error)."""
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    return isinstance(getattr(err, "controller_failure", None), WorkerGroupStartupTimeoutError)


def _gan_error_in(err: BaseException) -> GanError | None:
    """The first GanError raised by a worker, looking through Ray's wrappers."""
    failures = getattr(err, "worker_failures", None) or {}
    seen: list[BaseException] = [err, *failures.values()]
    while seen:
        e = seen.pop(0)
        if isinstance(e, GanError):
            return e
        cause = getattr(e, "cause", None) or e.__cause__
        if isinstance(cause, BaseException):
            seen.append(cause)
    return None
