"""The evaluate stage: models/generator/ -> eval/metrics.json, eval/per_class.json, eval/samples.png (and one MLflow run).

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

Every ``generate`` model is also audited for memorisation (:mod:`gan.privacy`): the
``privacy`` section of eval/metrics.json (distance to closest record in pixel and
feature space, membership-inference AUROCs) and eval/closest.png (sample | nearest
training image). The discriminator attack reads D from models/discriminator/, which the
train stage writes beside the export and which is never registered; without it that
one figure is left out.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gan.atomic import atomic_write_bytes, atomic_write_json
from gan.charts import notice
from gan.config import load_params
from gan.data import load_split, read_manifest
from gan.errors import GanError
from gan.export import load_networks
from gan.features import FeatureNet, load_feature_net
from gan.grid import save_grid
from gan.paths import check_outputs
from gan.per_class import class_report, coverage_alerts, per_class_chart
from gan.stages import stage_parser
from gan.tasks import make_task
from gan.tasks.base import EvalSettings
from gan.tracking import store_file

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
    # the MLflow run spans the measuring (its duration is the real one); an error ends it FAILED
    with mlflow_run(cfg.model_dump(), spec) as run_id:
        metrics = task.evaluate(nets, feature_net, data, settings)
        floor = task.real_floor(feature_net, data, settings)
        result = combine(metrics, floor)
        result["num_samples"] = cfg.num_samples

        class_names = list(spec.get("class_names") or [])
        headline, per_class = split_per_class(result, class_names)
        alerts: list[str] = []
        artifacts = [out / "metrics.json", out / "per_class.json", out / "samples.png", out / "per_class.png"]
        G = nets.get("G")
        if task.name == "generate" and G is not None and int(getattr(G, "num_classes", 0)) and manifest.get("labelled"):
            # within each class: the blind spot of the global metrics (a class collapsed onto
            # its background still counts as "covered" by mode_coverage)
            train_x, train_y = load_split(data, "train")
            val_x, val_y = load_split(data, "val")
            rows, floor_rows = class_report(G, feature_net, train_x, train_y, val_x, val_y, cfg.num_samples, cfg.seed, cfg.batch_size, cfg.nearest_k)
            alerts = coverage_alerts(rows, floor_rows, class_names, accuracy=per_class["classes"])
            per_class = add_class_quality(per_class, rows, floor_rows, alerts)
            headline["classes_below_floor"] = len(alerts)
            atomic_write_bytes(out / "per_class.png", per_class_chart(rows, floor_rows, class_names))
        else:
            atomic_write_bytes(out / "per_class.png", per_class_chart([], [], [], empty=f"no per-class figures for this {task.name} model"))
        audited = spec.get("inference", task.inference) == "generate" and "G" in nets
        if audited:  # memorisation audit of every generate model (gan.privacy)
            headline["privacy"] = privacy_audit(nets["G"], discriminator_for(Path(args.discriminator), spec), feature_net, data, cfg,
                                                out / "closest.png")  # fmt: skip
            artifacts.append(out / "closest.png")
        else:  # dvc.yaml declares the picture for every task
            atomic_write_bytes(out / "closest.png", notice(f"no memorisation audit for this {task.name} model"))
        images, nrow = task.grid(nets, seed=cfg.seed)
        save_grid(images, out / "samples.png", nrow)
        atomic_write_json(out / "per_class.json", per_class)
        atomic_write_json(out / "metrics.json", headline)
        log_results(headline, artifacts)
    if all(k in result for k in ("fid", "floor/fid", "kid", "precision", "recall")):  # the generate task's line
        summary = (f"fid {result['fid']:.3f} (floor {result['floor/fid']:.3f}), kid {result['kid']:.4f}, "
                   f"precision {result['precision']:.3f}, recall {result['recall']:.3f}")  # fmt: skip
    else:  # any other task: its primary metric, beside its floor where the task has one
        primary = task.metric.primary
        floor_text = f" (floor {result[f'floor/{primary}']:.3f})" if f"floor/{primary}" in result else ""
        others = ", ".join(f"{k} {result[k]:.4g}" for k in task.metric.names if k != primary and k in result)
        summary = f"{primary} {result.get(primary, float('nan')):.3f}{floor_text}" + (f", {others}" if others else "")
    if audited:
        summary += f", memorisation {headline['privacy']['memorisation']:.3f}"
    print(f"evaluate: {summary} -> {out} (MLflow run {run_id}) in {time.perf_counter() - start:.1f}s")
    for alert in alerts[:3]:
        print(f"evaluate: alert: {alert} (see {out / 'per_class.png'})")
    if len(alerts) > 3:
        print(f"evaluate: alert: {len(alerts) - 3} more classes far below their floor (eval/per_class.json lists them all)")
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


def split_per_class(result: dict[str, float], class_names: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """``(headline, per_class)``: keys ending in a class index (``conditional_accuracy/3``,
    ``floor/conditional_accuracy/3``) move to ``{"classes": [{"class": 3, "name": "3", ...}]}``.

    Flattened per-class values made eval/metrics.json 90+ keys wide, which buried the
    FID in `dvc metrics show` and `dvc exp show`.
    """
    headline: dict[str, float] = {}
    rows: dict[int, dict[str, Any]] = {}
    for key, value in result.items():
        metric, _, last = key.rpartition("/")
        if metric and last.isdigit():
            k = int(last)
            row = rows.setdefault(k, {"class": k, "name": class_names[k] if k < len(class_names) else str(k)})
            row[metric] = value
        else:
            headline[key] = value
    return headline, {"classes": [rows[k] for k in sorted(rows)]}


def add_class_quality(per_class: dict[str, Any], rows: list[dict[str, Any]], floor: list[dict[str, Any]], alerts: list[str]) -> dict[str, Any]:
    """per_class.json with each class's recall and coverage beside its floor, and the alert sentences."""
    classes = {c["class"]: dict(c) for c in per_class["classes"]}
    for k, (row, base) in enumerate(zip(rows, floor, strict=True)):
        entry = classes.setdefault(k, {"class": k, "name": str(k)})
        entry.update(recall=row["recall"], coverage=row["coverage"], samples=int(row["fake"]), real=int(row["real"]))
        entry.update({"floor/recall": base["recall"], "floor/coverage": base["coverage"]})
    return {"classes": [classes[k] for k in sorted(classes)], "alerts": alerts}


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


@contextlib.contextmanager
def mlflow_run(settings: dict[str, Any], spec: dict[str, Any]) -> Iterator[str]:
    """One run in the ``gan-evaluate`` experiment of :func:`gan.tracking.tracking_uri` around the work; yields its id."""
    import mlflow

    from gan.tracking import ensure_experiment, git_commit, source_tags

    experiment_id = ensure_experiment(EXPERIMENT)
    commit = git_commit()
    tags = {"git_commit": commit, "stage": "evaluate", "task": str(spec["task"]), "generator_arch": str(spec.get("arch")),
            **source_tags("pipelines/evaluate.py", commit)}  # fmt: skip
    if spec.get("mlflow_run_id"):
        tags["train_run_id"] = str(spec["mlflow_run_id"])
    with mlflow.start_run(experiment_id=experiment_id, run_name="evaluate", tags=tags) as run:
        mlflow.log_params({f"evaluate.{k}": v for k, v in settings.items()})
        yield run.info.run_id


def log_results(metrics: dict[str, float], artifacts: list[Path]) -> None:
    """The headline metrics and the output files, into the active run."""
    import mlflow

    mlflow.log_metrics(flat_metrics(metrics))
    for path in artifacts:
        mlflow.log_artifact(str(path))
