"""The train stage: Ray Train adversarial training -> models/generator/ and train/.

    python pipelines/train.py                          # model:, train: and tune.enabled of params.yaml
    RAY_ADDRESS=<head>:6379 python pipelines/train.py  # the same on a Ray cluster
    dvc repro train

Params are validated, tune/best.json applied (when tune.enabled and it exists) and the
data and models checked before Ray starts. The Ray run is named after a hash of the
training config, data and code, stored under train.storage_path: re-running after an
interruption resumes from the last checkpoint; ``--fresh`` starts over. Outputs:
models/generator/ (G_ema), models/discriminator/ (D, for the privacy audit; never registered), train/metrics.json, train/history.csv, train/samples/, and
one MLflow run in the experiment gan-train.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from gan.config import Params, load_params
from gan.errors import ConfigError, GanError
from gan.stages import stage_parser


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


def check_trainable(params: Params, manifest: dict[str, Any]) -> None:
    """Fail before Ray starts when the models cannot be built or the data cannot feed the workers."""
    from gan.tasks import make_task

    try:
        task = make_task(params, manifest)
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


def init_ray() -> bool:
    """Start or join Ray with worker output streamed to this console (rank 0's progress lines)."""
    from gan.ray_session import init_ray as start

    return start(stream_worker_output=True)


def check_resources(params: Params) -> None:
    """On a local Ray, refuse a worker group that can never be placed (Ray would wait forever)."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        return  # a cluster may autoscale
    cfg = params.train
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
    t0 = time.perf_counter()
    params = load_params(args.params)
    data_dir = args.data or params.prepare.out

    from gan.data import read_manifest
    from gan.tracking import ensure_experiment, git_commit
    from gan.training.outputs import final_metrics, generator_spec, write_outputs
    from gan.training.settings import apply_tuned, run_name
    from gan.training.tracking import EXPERIMENT, TrackingUnavailable, log_training_run

    manifest = read_manifest(data_dir)
    params, hyperparams = apply_tuned(params, args.tuned)
    check_trainable(params, manifest)
    from gan.tasks import make_task

    task = make_task(params, manifest)
    name = run_name(params, manifest["hash"])
    features = args.features if (Path(args.features) / "config.json").exists() else None
    ensure_experiment(EXPERIMENT)  # a clear error now if MLflow is unreachable, not after training

    connected = init_ray()
    check_resources(params)
    from gan.training.ray_run import run_training

    cfg = params.train
    print(
        f"train: run {name}, {cfg.num_workers} worker(s), {cfg.steps} steps of batch {cfg.batch_size}, "
        f"lr_G {cfg.lr_G:.2e}, lr_D {cfg.lr_D:.2e} (from {hyperparams['source']})",
        flush=True,
    )
    try:
        outcome = run_training(params, data_dir, name=name, features_dir=features, fresh=args.fresh)
    except GanError:
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
    tags = {"git_commit": git_commit(), "data_hash": str(manifest.get("hash")), "stage": "train", "ray_run": name}
    try:
        run_id = log_training_run(params.model_dump(mode="json"), outcome.checkpoint, metrics, tags, name)
    except TrackingUnavailable as err:
        # the training is not lost: its outputs are written now, the checkpoint stays in
        # Ray's storage, and the re-run logs it from there without training again
        spec = generator_spec(task, outcome.checkpoint, hyperparams, {"mlflow_run_id": None, "ray_run": name})
        write_outputs(task, outcome.checkpoint, spec, metrics, args.model_out, args.out, args.audit_out)
        raise GanError(
            f"training finished ({metrics['steps']} steps; outputs in {args.model_out} and {args.out}) but MLflow at {err.uri} "
            f"is not reachable ({err.detail}), so the run was not logged; start the server and re-run the stage to log it without training again."
        ) from None
    spec = generator_spec(task, outcome.checkpoint, hyperparams, {"mlflow_run_id": run_id, "ray_run": name})
    write_outputs(task, outcome.checkpoint, spec, metrics, args.model_out, args.out, args.audit_out)
    resumed = f", resumed from step {metrics['resumed_from_step']}" if metrics["resumed_from_step"] else ""
    print(
        f"train: {metrics['steps']} steps, loss/D {metrics.get('loss/D', float('nan')):.3f}, loss/G {metrics.get('loss/G', float('nan')):.3f}, "
        f"{metrics['throughput/img_s']:.0f} img/s, {timing['wall_time_s']:.0f}s{resumed} -> {args.model_out}",
        flush=True,
    )
    return 0

