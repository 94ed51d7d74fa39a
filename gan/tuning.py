"""Ray Tune search of the G/D learning-rate balance (the tune stage's library).

    result = run_search(params, data_dir="data/prepared", features_dir="models/features")

Why function trials, not ``Tuner(trainer)``: Ray Train V2 no longer accepts a trainer
inside a Tuner. A single-worker trial (``tune.workers_per_trial: 1``, the default)
runs :class:`gan.training.loop.GANTrainer` directly in the trial's own process, so a
trial pays no Ray Train start-up (no worker group, no process group). With
``workers_per_trial > 1`` the trial function builds and fits a ``TorchTrainer`` whose
rank 0 reports to Tune through ``TuneReportCallback``.

Every trial evaluates ``G_ema`` with :func:`gan.evaluation.evaluate_generator` on the
validation split every ``tune.eval_every`` steps (the same FID as every other stage)
and reports ``{metric, step}`` with a checkpoint, which is what ASHA prunes on, what
PBT/PB2 copy, and what ``Tuner.restore`` resumes from. A diverged trial raises
DivergenceError: Tune records it as errored and it is never chosen.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gan import signals
from gan.config import Params, TuneConfig, parse_params, resolve_worker_paths
from gan.errors import ConfigError
from gan.tasks import lower_is_better, task_class
from gan.training.inputs import local_path, stage_inputs, tree_hash

# keys of the search space and the train.* key each sets
SEARCHED = ("lr_G", "lr_D", "beta1", "n_critic")


def learning_rate_ranges(cfg: TuneConfig, tunable: tuple[str, ...] = ("lr_G", "lr_D")) -> dict[str, tuple[float, float]]:
    """``{train key: (low, high)}`` for each learning rate the task lets tune search (``Task.tunable``).

    Each needs a ``[low, high]`` range of the same name in the tune section.
    """
    missing = [key for key in tunable if getattr(cfg, key, None) is None]
    if missing:
        raise ConfigError(f"params.yaml: the task searches {missing[0]} but the tune section has no tune.{missing[0]} range; add one as [low, high].")
    return {key: tuple(getattr(cfg, key)) for key in tunable}


def search_space(cfg: TuneConfig, tunable: tuple[str, ...] = ("lr_G", "lr_D")) -> dict[str, Any]:
    """Ray Tune domains: the task's learning rates log-uniform (both directions of their ratios), optional beta1/n_critic."""
    from ray import tune

    if cfg.search_alg == "grid":
        # the axes as domains; the points themselves come from make_searcher, every one once
        return {key: tune.choice(values) for key, values in grid_axes(cfg, tunable).items()}
    space: dict[str, Any] = {key: tune.loguniform(*bounds) for key, bounds in learning_rate_ranges(cfg, tunable).items()}
    if cfg.beta1 is not None:
        space["beta1"] = tune.uniform(*cfg.beta1)
    if cfg.n_critic:
        space["n_critic"] = tune.choice(list(cfg.n_critic))
    return space


def grid_axes(cfg: TuneConfig, tunable: tuple[str, ...] = ("lr_G", "lr_D")) -> dict[str, list[Any]]:
    """The grid's values per key: about num_samples^(1/len(tunable)) log-spaced values per learning rate."""
    ranges = learning_rate_ranges(cfg, tunable)
    k = max(2, round(cfg.num_samples ** (1 / len(ranges))))
    axes: dict[str, list[Any]] = {key: log_grid(*bounds, k) for key, bounds in ranges.items()}
    if cfg.beta1 is not None:
        axes["beta1"] = list(cfg.beta1)
    if cfg.n_critic:
        axes["n_critic"] = list(cfg.n_critic)
    return axes


def grid_points(cfg: TuneConfig, tunable: tuple[str, ...] = ("lr_G", "lr_D")) -> list[dict[str, Any]]:
    """Every point of a log grid with about ``num_samples`` points over lr_G x lr_D (and the
    optional beta1 / n_critic choices), in an order shuffled by ``tune.seed``.

    Why shuffled: asynchronous ASHA promotes the first trials to reach a rung because
    there is nothing yet to compare them with; in grid order those would all be the
    lowest learning rates. Tune's own ``grid_search`` keeps the nested order, so the grid
    is handed to the variant generator as ``points_to_evaluate`` instead.
    """
    axes = grid_axes(cfg, tunable)
    points = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    random.Random(cfg.seed).shuffle(points)
    return points


def log_grid(low: float, high: float, k: int) -> list[float]:
    """``k`` points from ``low`` to ``high``, evenly spaced in log10."""
    a, b = math.log10(low), math.log10(high)
    return [float(f"{10 ** (a + (b - a) * i / (k - 1)):.3g}") for i in range(k)]


def make_searcher(cfg: TuneConfig, max_concurrent: int, tunable: tuple[str, ...] = ("lr_G", "lr_D")):
    """Tune's variant generator for random (seeded by ``tune.seed``) and grid (the shuffled
    :func:`grid_points`); Optuna's TPE otherwise; each running at most ``max_concurrent``
    trials at once (TuneConfig's ``max_concurrent_trials`` is ignored for a variant
    generator instance, so the bound is set here)."""
    from ray.tune.search import BasicVariantGenerator

    if cfg.search_alg == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=cfg.seed), max_concurrent=max_concurrent)
    if cfg.search_alg == "grid":
        return BasicVariantGenerator(points_to_evaluate=grid_points(cfg, tunable), random_state=cfg.seed, max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=max_concurrent)


def num_trials(cfg: TuneConfig, tunable: tuple[str, ...] = ("lr_G", "lr_D")) -> int:
    """Trials the search runs: every grid point, or ``num_samples``."""
    return len(grid_points(cfg, tunable)) if cfg.search_alg == "grid" else cfg.num_samples


def make_scheduler(cfg: TuneConfig):
    """ASHA (default), PBT or PB2 on the trial's ``step``; None for fifo."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    if cfg.scheduler == "asha":
        return ASHAScheduler(
            time_attr="step",
            max_t=cfg.max_steps,
            grace_period=cfg.grace_period * cfg.eval_every,
            reduction_factor=cfg.reduction_factor,
        )
    interval = cfg.perturbation_interval * cfg.eval_every
    # synchronous PBT/PB2: every trial waits at each perturbation step, then the bottom
    # quantile copies the top. Slower trials cost some waiting, but which trial exploits
    # which no longer depends on how fast each trial's process happened to start, so a
    # re-run of the stage makes the same decisions (asynchronous PBT on a busy machine
    # could finish one trial before the other had reported at all, and exploit nothing).
    # PBT/PB2 draw their perturbations from the global RNGs (they take no seed argument)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.scheduler == "pbt":
        mutations: dict[str, Any] = {"lr_G": tune.loguniform(*cfg.lr_G), "lr_D": tune.loguniform(*cfg.lr_D)}
        if cfg.beta1 is not None:
            mutations["beta1"] = tune.uniform(*cfg.beta1)
        return PopulationBasedTraining(time_attr="step", perturbation_interval=interval, hyperparam_mutations=mutations, synch=True)
    if cfg.scheduler == "pb2":
        from ray.tune.schedulers.pb2 import PB2

        bounds = {"lr_G": list(cfg.lr_G), "lr_D": list(cfg.lr_D)}
        return PB2(time_attr="step", perturbation_interval=interval, hyperparam_bounds=bounds, synch=True)
    return None


def trial_params(params: Params, config: dict[str, Any]) -> Params:
    """The params one trial trains with: the sampled values, tune's step budget and eval cadence."""
    cfg = params.tune
    raw = params.model_dump()
    raw["train"].update({k: v for k, v in config.items() if k in SEARCHED or k.startswith("lr_")})
    raw["train"].update(
        steps=cfg.max_steps,
        eval_every=cfg.eval_every,
        eval_samples=cfg.eval_samples,
        log_every=cfg.eval_every,
        checkpoint_every=cfg.eval_every,
        sample_every=cfg.max_steps * 10,  # no sample grids inside trials
        num_workers=cfg.workers_per_trial,
    )
    return parse_params(raw, source="tune trial")


def search_fingerprint(params: Params, data_hash: str, features_hash: str) -> str:
    """``tune-<10 hex>``: stable for one search (tune/model/train params, data, features)."""
    blob = json.dumps(
        {"tune": params.tune.model_dump(exclude={"storage_path"}), "model": params.model.model_dump(),
         "train": params.train.model_dump(include=set(trial_train_keys())), "data": data_hash, "features": features_hash},
        sort_keys=True,
    )
    return "tune-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


# train.* keys a trial does not take from params.yaml: trial_params sets them from tune's
# budget, cadence and workers, or from the sampled point (the learning rates are always searched)
SET_BY_TRIALS = ("steps", "eval_every", "eval_samples", "log_every", "checkpoint_every", "sample_every", "num_workers", "lr_G", "lr_D")
# ... and the keys only the train stage reads: its Ray Train resources, storage and restart policy
TRAIN_STAGE_ONLY = ("use_gpu", "cpus_per_worker", "gpus_per_worker", "placement_strategy", "max_failures", "storage_path", "fresh")


def trial_train_keys() -> tuple[str, ...]:
    """Every train.* key that shapes a tune trial: all of TrainConfig but the two lists above.

    Derived, not listed, so that a new train key counts for tune (its fingerprint, and the
    tune stage's DVC params, which tests/test_dvc_deps.py checks against this) until it is
    named in one of them.
    """
    from gan.config import TrainConfig

    exempt = set(SET_BY_TRIALS) | set(TRAIN_STAGE_ONLY)
    return tuple(key for key in TrainConfig.model_fields if key not in exempt)


def run_trial(config: dict[str, Any], params_dict: dict[str, Any], data_dir: Any, features_dir: Any) -> None:
    """One single-worker trial, in the trial's process: train, evaluate, report, checkpoint.

    ``data_dir`` / ``features_dir``: paths, or :mod:`gan.training.inputs` references that
    resolve on the trial's node.

    On restore (resume or a PBT exploit) the trainer loads the checkpoint and *then*
    applies this trial's config to the optimisers: restoring an optimiser's state would
    otherwise bring back the learning rates it was saved with.
    """
    import torch
    from ray import tune

    from gan.features import load_feature_net
    from gan.tasks.base import EvalSettings
    from gan.training.checkpoint import TrainCheckpoint, load_checkpoint, save_checkpoint
    from gan.training.factory import make_trainer
    from gan.training.loop import fit

    entered = time.perf_counter()
    data_dir, features_dir = local_path(data_dir), local_path(features_dir)
    torch.set_num_threads(max(1, int(params_dict["tune"]["cpus_per_trial"])))
    params = trial_params(parse_params(params_dict), config)
    metric = params.tune.metric
    trainer = make_trainer(params, data_dir, features_dir)
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            trainer.load_state_dict(load_checkpoint(d).state)
        trainer.set_hparams(**{k: config[k] for k in config if k in trainer.task.mutable})
    feature_net = load_feature_net(features_dir)
    settings = EvalSettings(num_samples=params.tune.eval_samples, seed=params.tune.seed, batch_size=500)
    setup_s = time.perf_counter() - entered  # per-trial start-up inside the trial process

    def eval_fn(nets, step: int) -> dict[str, float]:
        return {metric: trainer.task.evaluate(nets, feature_net, data_dir, settings)[metric]}

    def report(metrics: dict[str, float], ckpt: TrainCheckpoint | None) -> None:
        if metric not in metrics:
            return
        lrs = {k: v for k, v in metrics.items() if k.startswith("lr_")}  # one per optimiser of the task
        out = {metric: metrics[metric], "step": int(metrics["step"]), **lrs,
               "loss/D": metrics.get("loss/D", float("nan")), "loss/G": metrics.get("loss/G", float("nan")), "setup_s": setup_s}
        if ckpt is None:
            tune.report(out)
            return
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(TrainCheckpoint(state=ckpt.state), d)
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(d))

    if restored is not None and trainer.step >= params.train.steps:
        # a PBT exploit at the last step restarts this trial from a finished checkpoint:
        # nothing is left to train, but Tune must see the clone's score under this trial's
        # (mutated) config, or trials.csv would pair the new config with the old score
        report({**eval_fn(trainer.exported_networks(), trainer.step), "step": float(trainer.step), **trainer.hparams()}, None)
        return
    fit(params, data_dir, trainer=trainer, report=report, eval_fn=eval_fn, log=None)


def run_trial_distributed(config: dict[str, Any], params_dict: dict[str, Any], data_dir: Any, features_dir: Any) -> None:
    """A multi-worker trial: a TorchTrainer per trial; rank 0's reports reach Tune."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from gan.ray_session import poll_ray_train_often
    from gan.training.ray_run import train_loop_per_worker

    params = trial_params(parse_params(params_dict), config)
    cfg = params.tune
    poll_ray_train_often()  # like run_training: set where each TorchTrainer is made
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"params": params.model_dump(), "data_dir": data_dir, "features_dir": features_dir, "report_metric_only": True},
        scaling_config=ScalingConfig(num_workers=cfg.workers_per_trial, use_gpu=cfg.gpus_per_trial > 0,
                                     resources_per_worker={"CPU": worker_cpus(cfg), **({"GPU": cfg.gpus_per_trial} if cfg.gpus_per_trial else {})}),
        run_config=RunConfig(callbacks=[TuneReportCallback()], storage_path=cfg.storage_path),  # absolute or a URI (run_search)
    )
    trainer.fit()


# the CPU that a multi-worker trial's own process (which only starts its TorchTrainer) takes
TRIAL_DRIVER_CPU = 0.01


def worker_cpus(cfg: TuneConfig) -> float:
    """The CPU each worker of a multi-worker trial asks Ray for: ``cpus_per_trial`` less the trial
    process's ``TRIAL_DRIVER_CPU``, so that a trial fits wherever its workers' CPUs fit. The trial
    process shares a node with one of its workers; with whole-node workers, its 0.01 CPU on top
    would leave that worker unplaceable, and the trial would wait forever. Torch threads still
    follow ``cpus_per_trial``."""
    return cfg.cpus_per_trial - TRIAL_DRIVER_CPU


def bounded_concurrency(cfg: TuneConfig) -> int:
    """``max_concurrent_trials``, but no more than the cluster's CPUs (and GPUs) can hold."""
    import ray

    res = ray.cluster_resources()
    per_cpu = cfg.cpus_per_trial * cfg.workers_per_trial
    fit_cpu = int(res.get("CPU", 1) // per_cpu) if per_cpu else cfg.max_concurrent_trials
    fit_gpu = int(res.get("GPU", 0) // (cfg.gpus_per_trial * cfg.workers_per_trial)) if cfg.gpus_per_trial else fit_cpu
    return max(1, min(cfg.max_concurrent_trials, fit_cpu, fit_gpu))


def run_search(params: Params, data_dir: str, features_dir: str, data_hash: str) -> dict[str, Any]:
    """Run (or resume) the search; return per-trial rows and the experiment path."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    cfg = params.tune
    tunable = task_class(params.model.task).tunable  # the learning rates this kind of GAN has
    lower = lower_is_better(params.model.task, cfg.metric)  # the metric's direction, from the task table
    name = search_fingerprint(params, data_hash, tree_hash(features_dir))
    storage = str(Path(cfg.storage_path).resolve()) if "://" not in cfg.storage_path else cfg.storage_path
    path = f"{storage.rstrip('/')}/{name}"
    fn = run_trial if cfg.workers_per_trial == 1 else run_trial_distributed
    # trials get the storage as the driver resolved it: a multi-worker trial runs its own
    # TorchTrainer from the trial's working directory, possibly on another node
    params_dict = resolve_worker_paths(params.model_dump())
    params_dict["tune"]["storage_path"] = storage
    # on a cluster, trials on other nodes read the data and the feature network staged in storage
    inputs = stage_inputs({"data": data_dir, "features": features_dir}, storage)
    trainable = tune.with_parameters(fn, params_dict=params_dict, data_dir=inputs["data"], features_dir=inputs["features"])
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial} if cfg.workers_per_trial == 1 else {"cpu": TRIAL_DRIVER_CPU}
    trainable = tune.with_resources(trainable, resources)
    t0 = time.perf_counter()
    resumed = tune.Tuner.can_restore(path)
    if resumed:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(cfg, tunable),
            tune_config=tune.TuneConfig(
                metric=cfg.metric,
                mode="min" if lower else "max",
                search_alg=make_searcher(cfg, bounded_concurrency(cfg), tunable),
                scheduler=make_scheduler(cfg),
                num_samples=num_trials(cfg, tunable),
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=0),
                # the result files trial_rows reads; TensorBoard logging stays off
                callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],
                # PBT/PB2 may exploit any earlier checkpoint of a better trial: keep them all
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if cfg.scheduler in ("pbt", "pb2") else 2),
                verbose=0,
            ),
        )
    # Ctrl-C: recorded, then Tune's graceful stop (SIGUSR1: the experiment state is saved one
    # last time for Tuner.restore) instead of Tune's SIGINT handler, which records nothing
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    with signals.sigint_as(signal.SIGUSR1):
        grid = tuner.fit()
    wall = time.perf_counter() - t0
    return {"rows": trial_rows(grid, cfg.metric, lower), "lower_is_better": lower, "name": name, "path": path, "resumed": resumed, "wall_s": wall,
            "finished": not signals.received() and search_finished(len(grid), grid.num_terminated, grid.num_errors, num_trials(cfg))}


def search_finished(trials: int, terminated: int, errored: int, planned: int) -> bool:
    """Whether every planned trial ran to its end (completed, stopped early or failed).

    Tune's Ctrl-C handler (and SIGUSR1) stops the search gracefully and ``fit()`` returns
    normally, with trials still running or paused and others not yet created: such a
    result must not be reported as the search's outcome.
    """
    return trials >= planned and terminated + errored == trials


def trial_rows(grid, metric: str, lower: bool = True) -> list[dict[str, Any]]:
    """One row per trial: config, status, best and last score, steps run, its metric curve (``lower``: lower scores are better)."""
    rows = []
    for result in grid:
        # a trial that failed before its first report has no config
        config = {k: v for k, v in (result.config or {}).items() if k in SEARCHED or k.startswith("lr_")}
        df = result.metrics_dataframe
        curve = [] if df is None or metric not in df else df[["step", metric]].dropna().to_dict("records")
        scores = [r[metric] for r in curve if math.isfinite(r[metric])]
        last_lrs: dict[str, Any] = {"lr_curve": []}
        if df is not None and "lr_G" in df and len(df):
            # the learning rates the optimisers actually used (PBT/PB2 change them mid-trial)
            last_lrs = {"final_lr_G": float(df["lr_G"].iloc[-1]), "final_lr_D": float(df["lr_D"].iloc[-1]),
                        "lr_curve": df[["step", "lr_G", "lr_D"]].to_dict("records")}
        setup = float(df["setup_s"].iloc[0]) if df is not None and "setup_s" in df and len(df) else float("nan")
        rows.append({
            "setup_s": setup,
            "time_total_s": float(df["time_total_s"].iloc[-1]) if df is not None and "time_total_s" in df and len(df) else float("nan"),
            "trial_id": result.path.rstrip("/").split("/")[-1] if result.path else "",
            **config,
            **last_lrs,
            "status": "failed" if result.error else "completed",
            "error": "" if not result.error else str(result.error).strip().splitlines()[-1][:200],
            "score": (min(scores) if lower else max(scores)) if scores else float("nan"),
            "last_score": scores[-1] if scores else float("nan"),
            "steps": int(curve[-1]["step"]) if curve else 0,
            "curve": curve,
        })
    return rows


def best_row(rows: list[dict[str, Any]], lower: bool = True) -> dict[str, Any] | None:
    """The completed trial with the best score (the lowest when ``lower``); failed or unscored trials are never chosen."""
    ok = [r for r in rows if r["status"] == "completed" and math.isfinite(r["score"])]
    if not ok:
        return None
    return min(ok, key=lambda r: r["score"]) if lower else max(ok, key=lambda r: r["score"])
