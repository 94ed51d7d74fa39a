"""The evaluate stage: models/generator/ -> eval/metrics.json + eval/samples.png (and one MLflow run).

    python pipelines/evaluate.py               # reads the evaluate: section of params.yaml
    dvc repro evaluate

For ``model.task: detect``: AUROC, average precision and FPR/TPR at the exported threshold
on the test split, with the PCA-reconstruction baseline as ``floor/<name>`` and the score
histogram as samples.png (:mod:`gan.tasks.detect`). For ``generate``: generates ``evaluate.num_samples`` images, measures them against the real
validation split in the feature space of models/features/ (FID, KID,
precision/recall, density/coverage, and with labels Inception-Score-style score,
mode coverage, class KL and conditional accuracy), and writes each metric beside
its real-vs-real floor (``fid`` and ``floor/fid``: the training split measured the
same way). The metrics and the sample grid are logged to MLflow's ``gan-evaluate``
experiment, tagged with the git commit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gan.atomic import atomic_write_json
from gan.config import load_params
from gan.data import read_manifest
from gan.errors import GanError
from gan.export import load_networks
from gan.features import FeatureNet, load_feature_net
from gan.grid import save_grid
from gan.paths import check_outputs
from gan.stages import stage_parser
from gan.tasks import make_task
from gan.tasks.base import EvalSettings
from gan.tracking import store_file

EXPERIMENT = "gan-evaluate"


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", default="models/generator", help="exported generator (default: models/generator)")
    parser.add_argument("--features", default="models/features", help="feature network (default: models/features)")
    parser.add_argument("--out", default="eval", help="output directory for metrics.json and samples.png (default: eval)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg, data, out = params.evaluate, Path(args.data or params.prepare.out), Path(args.out)
    check_outputs({"--out": out}, {"--data": data, "--model": args.model, "--features": args.features, "--params": args.params,
                                   "the MLflow store": store_file()})
    start = time.perf_counter()

    nets, spec = load_networks(args.model)
    feature_net = load_feature_net(args.features)
    manifest = read_manifest(data)  # a clear message when the prepared data is missing
    task = make_task(params, manifest)
    if spec["task"] != task.name:
        raise GanError(f"{args.model} is a '{spec['task']}' model but params.yaml's model.task is '{task.name}'; re-run train (dvc repro train).")
    image_shape = (int(manifest["channels"]), int(manifest["image_size"]), int(manifest["image_size"]))
    _check_compatible(spec, feature_net, image_shape, args.model, args.features, data)

    settings = EvalSettings(num_samples=cfg.num_samples, seed=cfg.seed, batch_size=cfg.batch_size, nearest_k=cfg.nearest_k,
                            kid_subset_size=cfg.kid_subset_size)  # fmt: skip
    metrics = task.evaluate(nets, feature_net, data, settings)
    floor = task.real_floor(feature_net, data, settings)
    result = combine(metrics, floor)
    result["num_samples"] = cfg.num_samples

    images, nrow = task.grid(nets, seed=cfg.seed)
    save_grid(images, out / "samples.png", nrow)
    atomic_write_json(out / "metrics.json", result)
    run_id = log_to_mlflow(result, [out / "metrics.json", out / "samples.png"], cfg.model_dump(), spec)
    if all(k in result for k in ("fid", "floor/fid", "kid", "precision", "recall")):  # the generate task's line
        summary = (f"fid {result['fid']:.3f} (floor {result['floor/fid']:.3f}), kid {result['kid']:.4f}, "
                   f"precision {result['precision']:.3f}, recall {result['recall']:.3f}")  # fmt: skip
    else:  # any other task: its primary metric, beside its floor where the task has one
        primary = task.metric.primary
        floor = f" (floor {result[f'floor/{primary}']:.3f})" if f"floor/{primary}" in result else ""
        others = ", ".join(f"{k} {result[k]:.4g}" for k in task.metric.names if k != primary and k in result)
        summary = f"{primary} {result.get(primary, float('nan')):.3f}{floor}" + (f", {others}" if others else "")
    print(f"evaluate: {summary} -> {out} (MLflow run {run_id}) in {time.perf_counter() - start:.1f}s")
    return 0


def combine(metrics: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """The generator's metrics with the floor of each beside it as ``floor/<name>``."""
    return {**metrics, **{f"floor/{k}": v for k, v in floor.items() if k in metrics}}


def _check_compatible(spec: dict[str, Any], feature_net: FeatureNet, image_shape: tuple[int, ...], model: str, features: str, data: Path) -> None:
    """One sentence when the generator, the feature network and the data disagree on the image shape."""
    want = (feature_net.channels, feature_net.image_size, feature_net.image_size)
    gen = (int(spec["channels"]), int(spec["image_size"]), int(spec["image_size"]))
    if tuple(image_shape) != want:
        raise GanError(f"{features} was trained on {want} images but {data} holds {tuple(image_shape)}; re-run the featurize stage (dvc repro featurize).")
    if gen != want:
        raise GanError(f"{model} generates {gen} images but {features} expects {want}; re-run train on the current prepared data (dvc repro train).")


def log_to_mlflow(metrics: dict[str, float], artifacts: list[Path], settings: dict[str, Any], spec: dict[str, Any]) -> str:
    """One run in the ``gan-evaluate`` experiment of :func:`gan.tracking.tracking_uri`; returns its id."""
    import mlflow

    from gan.tracking import ensure_experiment, git_commit

    experiment_id = ensure_experiment(EXPERIMENT)
    tags = {"git_commit": git_commit(), "stage": "evaluate", "task": str(spec["task"]), "generator_arch": str(spec.get("arch"))}
    with mlflow.start_run(experiment_id=experiment_id, run_name="evaluate", tags=tags) as run:
        mlflow.log_params({f"evaluate.{k}": v for k, v in settings.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id

