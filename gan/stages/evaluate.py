"""The evaluate stage: models/generator/ -> eval/metrics.json + eval/samples.png (and one MLflow run).

    python pipelines/evaluate.py               # reads the evaluate: section of params.yaml
    dvc repro evaluate

Generates ``evaluate.num_samples`` images, measures them against the real
validation split in the feature space of models/features/ (FID, KID,
precision/recall, density/coverage, and with labels Inception-Score-style score,
mode coverage, class KL and conditional accuracy), and writes each metric beside
its real-vs-real floor (``fid`` and ``floor/fid``: the training split measured the
same way). The metrics and the sample grid are logged to MLflow's ``gan-evaluate``
experiment, tagged with the git commit.

Every ``generate`` model is also audited for memorisation (:mod:`gan.privacy`): the
``privacy`` section of eval/metrics.json (distance to closest record in pixel and
feature space, membership-inference AUROCs) and eval/closest.png (sample | nearest
training image). The discriminator attack reads D from models/discriminator/, which the
train stage writes beside the export and which is never registered; without it that
one figure is left out.
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
from gan.stages import stage_parser
from gan.tasks import make_task
from gan.tasks.base import EvalSettings

EXPERIMENT = "gan-evaluate"


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", default="models/generator", help="exported generator (default: models/generator)")
    parser.add_argument("--features", default="models/features", help="feature network (default: models/features)")
    parser.add_argument("--discriminator", default="models/discriminator", help="D for the membership attack (default: models/discriminator; optional)")
    parser.add_argument("--out", default="eval", help="output directory for metrics.json and samples.png (default: eval)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cfg, data, out = params.evaluate, Path(args.data or params.prepare.out), Path(args.out)
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

    artifacts = [out / "metrics.json", out / "samples.png"]
    audited = spec.get("inference", task.inference) == "generate" and "G" in nets
    if audited:
        result["privacy"] = privacy_audit(nets["G"], discriminator_for(Path(args.discriminator), spec), feature_net, data, cfg, out / "closest.png")
        artifacts.append(out / "closest.png")
    images, nrow = task.grid(nets, seed=cfg.seed)
    save_grid(images, out / "samples.png", nrow)
    atomic_write_json(out / "metrics.json", result)
    run_id = log_to_mlflow(result, artifacts, cfg.model_dump(), spec)
    audit = f", memorisation {result['privacy']['memorisation']:.3f}" if audited else ""
    print(
        f"evaluate: fid {result['fid']:.3f} (floor {result['floor/fid']:.3f}), kid {result['kid']:.4f}, "
        f"precision {result['precision']:.3f}, recall {result['recall']:.3f}{audit} -> {out} "
        f"(MLflow run {run_id}) in {time.perf_counter() - start:.1f}s"
    )
    return 0


def discriminator_for(path: Path, spec: dict[str, Any]) -> Any:
    """D from ``path`` when the train stage wrote it in the same run and step as the generator, else None (with a note)."""
    if not (path / "config.json").exists():
        return None
    nets, d_spec = load_networks(path)
    same = all(d_spec.get(k) == spec.get(k) for k in ("ray_run", "step", "data_hash"))
    if not same or "D" not in nets:
        print(f"evaluate: {path} is not from the run that made this generator; the discriminator attack is left out.")
        return None
    return nets["D"]


def privacy_audit(G: Any, D: Any, feature_net: FeatureNet, data: Path, cfg: Any, picture: Path) -> dict[str, float]:
    """The memorisation audit of G (and D's membership attack when D is given) on the training and validation splits.

    Draws the closest pairs to ``picture``. An export from elsewhere (a registry
    download) comes without D and is audited without that figure.
    """
    from gan.data import load_split
    from gan.privacy import audit_generator, closest_pairs_grid

    train_x, train_y = load_split(data, "train")
    val_x, val_y = load_split(data, "val")
    figures, pairs, samples, sets = audit_generator(G, D, feature_net, train_x, train_y, val_x, val_y, cfg.num_samples, seed=cfg.seed,
                                                    batch_size=cfg.batch_size)  # fmt: skip
    images, nrow = closest_pairs_grid(samples, sets.train_x, pairs)
    save_grid(images, picture, nrow)
    return figures


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


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of eval/metrics.json under MLflow names: a section's entries as ``<section>/<name>`` (``privacy/dcr_share/pixel``)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": float(v) for k, v in value.items()})
        else:
            out[key] = float(value)
    return out


def log_to_mlflow(metrics: dict[str, float], artifacts: list[Path], settings: dict[str, Any], spec: dict[str, Any]) -> str:
    """One run in the ``gan-evaluate`` experiment of :func:`gan.tracking.tracking_uri`; returns its id."""
    import mlflow

    from gan.tracking import ensure_experiment, git_commit

    experiment_id = ensure_experiment(EXPERIMENT)
    tags = {"git_commit": git_commit(), "stage": "evaluate", "task": str(spec["task"]), "generator_arch": str(spec.get("arch"))}
    with mlflow.start_run(experiment_id=experiment_id, run_name="evaluate", tags=tags) as run:
        mlflow.log_params({f"evaluate.{k}": v for k, v in settings.items()})
        mlflow.log_metrics(flat_metrics(metrics))
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id

