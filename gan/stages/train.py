"""The train stage: Ray Train adversarial training -> models/generator/ and train/.

    python pipelines/train.py                          # model:, train: and tune.enabled of params.yaml
    RAY_ADDRESS=<head>:6379 python pipelines/train.py  # the same on a Ray cluster
    dvc repro train

Params are validated, tune/best.json applied (when tune.enabled and it exists) and the
data and models checked before Ray starts. The Ray run is named after a hash of the
training config, data and code, stored under train.storage_path: re-running after an
interruption resumes from the last checkpoint; ``train.fresh: true`` (or ``--fresh``)
discards that run's checkpoints and starts over. A run that had finished is resumed at
its last step, so ``dvc repro -f -s train`` exports the same weights again (and register
adds no version); ``dvc exp run -S train.fresh=true`` retrains from step 0. Outputs:
models/generator/ (G_ema), models/discriminator/ (D, for the privacy audit; never registered), train/metrics.json, train/history.csv, train/samples/, and
one MLflow run in the experiment gan-train.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from gan.atomic import output_lock
from gan.config import Params, load_params
from gan.errors import ConfigError, GanError
from gan.paths import check_outputs
from gan.stages import stage_parser
from gan.tracking import store_file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = stage_parser(__doc__)
    parser.add_argument("--features", default="models/features", help="feature network for FID during training (optional)")
    parser.add_argument("--tuned", default="tune/best.json", help="tuned values, applied when tune.enabled (default: tune/best.json)")
    parser.add_argument("--model-out", default="models/generator", help="exported generator (default: models/generator)")
    parser.add_argument("--audit-out", default=None,
                        help="networks the privacy audit reads, never registered (default: 'discriminator' beside --model-out: models/discriminator)")
    parser.add_argument("--out", default="train", help="metrics.json, history.csv, samples/ (default: train)")
    parser.add_argument("--fresh", action="store_true", help="discard this config's checkpoints and start over")
    args = parser.parse_args(argv)
    if args.audit_out is None:
        args.audit_out = str(Path(args.model_out).parent / "discriminator")
    return args


def check_trainable(params: Params, manifest: dict[str, Any], data_dir: str, features: str | None) -> Any:
    """The task, once its networks are known to build; fails before Ray starts when the models
    cannot be built or the data cannot feed the workers."""
    from gan.training.factory import task_for

    try:
        task = task_for(params, data_dir, features)
        task.build_networks()
    except ValueError as err:
        raise ConfigError(f"params.yaml: the model section cannot be built for this data ({err}).") from None
    cfg = params.train
    if cfg.privacy.enabled:
        from gan.training.privacy import check_task

        check_task(task)
    count = int(manifest["counts"]["train"]["total"])
    if count // cfg.num_workers < cfg.batch_size:
        raise ConfigError(
            f"params.yaml: train.batch_size = {cfg.batch_size} is invalid: each of the {cfg.num_workers} workers gets "
            f"{count // cfg.num_workers} training images; use at most that many or fewer workers."
        )
    if cfg.diffaugment:
        import gan.diffaugment  # noqa: F401  (fails here, not inside a worker, when unavailable)
    return task


def init_ray() -> bool:
    """Start or join Ray with worker output streamed to this console (rank 0's progress lines)."""
    from gan.ray_session import hide_actor_output
    from gan.ray_session import init_ray as start

    connected = start(stream_worker_output=True)
    hide_actor_output()  # Ray Train's PlacementGroupCleaner traceback when another Ray runs here
    return connected


def placement_problem(strategy: str, num_workers: int, per_worker: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """Why ``num_workers`` bundles of ``per_worker`` can never be placed on ``nodes`` with ``strategy``, or None.

    STRICT_SPREAD puts every worker on a different node; STRICT_PACK puts them all on one.
    PACK and SPREAD are preferences Ray relaxes, so only the totals matter for them
    (checked by :func:`check_resources`).
    """
    if strategy == "STRICT_SPREAD":
        fits = sum(all(node.get(k, 0.0) >= v for k, v in per_worker.items()) for node in nodes)
        if fits < num_workers:
            return f"puts each of the {num_workers} workers on a different node, but this Ray has {fits} node(s) that can hold one"
    if strategy == "STRICT_PACK" and not any(all(node.get(k, 0.0) >= v * num_workers for k, v in per_worker.items()) for node in nodes):
        return f"puts all {num_workers} workers on one node, but no node of this Ray has room for them all"
    return None


def check_resources(params: Params) -> None:
    """On a local Ray, refuse a worker group that can never be placed (Ray would wait forever)."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        return  # a cluster may autoscale
    cfg = params.train
    per_worker = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.use_gpu else {})}
    nodes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    problem = placement_problem(cfg.placement_strategy, cfg.num_workers, per_worker, nodes)
    if problem:
        raise ConfigError(
            f"params.yaml: train.placement_strategy = {cfg.placement_strategy} {problem}; "
            f"use PACK or SPREAD, lower train.num_workers, or set RAY_ADDRESS to a cluster with enough nodes."
        )
    have = ray.cluster_resources()
    need = {"CPU": cfg.num_workers * cfg.cpus_per_worker}
    if cfg.use_gpu:
        need["GPU"] = cfg.num_workers * cfg.gpus_per_worker
    for kind, amount in need.items():
        if have.get(kind, 0) < amount:
            key = "train.use_gpu" if kind == "GPU" and not have.get("GPU") else "train.num_workers"
            raise ConfigError(
                f"params.yaml: {key} asks for {amount:g} {kind} in all but this machine's Ray has {have.get(kind, 0):g}; "
                f"lower train.num_workers / train.cpus_per_worker{' or set train.use_gpu: false' if kind == 'GPU' else ''}, or set RAY_ADDRESS to a cluster."
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0, start_ms = time.perf_counter(), int(time.time() * 1000)
    params = load_params(args.params)
    data_dir = args.data or params.prepare.out
    check_outputs({"--model-out": args.model_out, "--out": args.out},
                  {"--data": data_dir, "--features": args.features, "--tuned": args.tuned, "--params": args.params,
                   "train.storage_path": params.train.storage_path, "the MLflow store": store_file()})
    # one train stage per output at a time: a second one would resume the same Ray run
    # from the same checkpoints and race the first to the outputs
    with output_lock(args.out):
        return train(args, params, data_dir, t0, start_ms)


def train(args: argparse.Namespace, params: Params, data_dir: str, t0: float, start_ms: int) -> int:
    """The stage's work once its outputs are known to be its own."""
    from gan.data import read_manifest
    from gan.tracking import ensure_experiment, git_commit, source_tags
    from gan.training.outputs import final_metrics, generator_spec, write_outputs
    from gan.training.settings import apply_tuned, run_name
    from gan.training.tracking import (
        EXPERIMENT,
        TrackingUnavailable,
        log_failed_run,
        log_training_run,
    )

    manifest = read_manifest(data_dir)
    params, hyperparams = apply_tuned(params, args.tuned)
    features = args.features if (Path(args.features) / "config.json").exists() else None
    task = check_trainable(params, manifest, data_dir, features)
    name = run_name(params, manifest["hash"])
    ensure_experiment(EXPERIMENT)  # a clear error now if MLflow is unreachable, not after training

    connected = init_ray()
    check_resources(params)
    from gan.ray_session import ray_where
    from gan.training.ray_run import run_training

    cfg = params.train
    print(
        f"train: run {name}, {cfg.num_workers} worker(s), {cfg.steps} steps of batch {cfg.batch_size}, "
        f"lr_G {cfg.lr_G:.2e}, lr_D {cfg.lr_D:.2e} (from {hyperparams['source']}){ray_where()}",
        flush=True,
    )
    commit = git_commit()
    tags = {"git_commit": commit, "data_hash": str(manifest.get("hash")), "stage": "train", "ray_run": name, **source_tags("pipelines/train.py", commit)}
    try:
        outcome = run_training(params, data_dir, name=name, features_dir=features, fresh=args.fresh or cfg.fresh)
    except (GanError, KeyboardInterrupt) as err:
        log_failed_run(name, tags, str(err) or type(err).__name__, start_ms)
        if connected:
            # worker output reaches this console asynchronously (dead workers' tracebacks
            # too): disconnect first, so that the stage's own sentence is the last line
            import ray

            ray.shutdown()
        raise
    timing = {"wall_time_s": round(time.perf_counter() - t0, 2), "train_time_s": round(outcome.wall_s, 2)}
    if outcome.startup_s is not None:
        timing["startup_s"] = round(outcome.startup_s, 2)
    metrics = final_metrics(outcome.checkpoint, outcome.summary, hyperparams, timing)
    try:
        run_id = log_training_run(params.model_dump(mode="json"), outcome.checkpoint, metrics, tags, name, start_ms=start_ms)
    except TrackingUnavailable as err:
        # the training is not lost: its outputs are written now, the checkpoint stays in
        # Ray's storage, and the re-run logs it from there without training again
        spec = generator_spec(task, outcome.checkpoint, hyperparams, {"mlflow_run_id": None, "ray_run": name})
        write_outputs(task, outcome.checkpoint, spec, metrics, args.model_out, args.out, data_dir, args.audit_out)
        raise GanError(
            f"training finished ({metrics['steps']} steps; outputs in {args.model_out} and {args.out}) but MLflow at {err.uri} "
            f"is not reachable ({err.detail}), so the run was not logged; start the server and re-run the stage to log it without training again."
        ) from None
    spec = generator_spec(task, outcome.checkpoint, hyperparams, {"mlflow_run_id": run_id, "ray_run": name})
    write_outputs(task, outcome.checkpoint, spec, metrics, args.model_out, args.out, data_dir, args.audit_out)
    print(train_line(metrics, args.model_out), flush=True)
    return 0


def train_line(metrics: dict[str, Any], model_out: str) -> str:
    """The stage's closing line; a run that had already finished says so instead of showing a throughput."""
    if not metrics.get("steps_trained", 1):
        return (f"train: nothing to train, this config's run had finished at step {metrics['steps']} ({losses(metrics).rstrip(', ')}); "
                f"exported it again -> {model_out} (set train.fresh: true or pass --fresh to train again from step 0)")  # fmt: skip
    resumed = f", resumed from step {metrics['resumed_from_step']}" if metrics["resumed_from_step"] else ""
    speed = f"{metrics['throughput/img_s']:.0f} img/s, " if "throughput/img_s" in metrics else ""
    return f"train: {metrics['steps']} steps, {losses(metrics)}{speed}{metrics['wall_time_s']:.0f}s{resumed} -> {model_out}"


def losses(metrics: dict[str, Any]) -> str:
    """The last logged losses for the console line (f-AnoGAN's encoder phase logs loss/E only)."""
    return "".join(f"{k} {metrics[k]:.3f}, " for k in ("loss/D", "loss/G", "loss/E") if k in metrics)
