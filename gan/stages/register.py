"""The register stage: models/generator/ -> a new MLflow model version + registry/decision.json.

    python pipelines/register.py               # reads the register: section of params.yaml
    dvc repro register
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 dvc repro register     # a shared registry

Logs the exported generator as a pyfunc model (weights as safetensors, no training
code; see gan/mlflow_model.py) in the ``gan-register`` experiment and registers it as
a new version of ``register.model_name`` carrying the eval metrics, the train, model
and tune settings it was trained with, the git commit, the prepared data's hash and
the sample grid. The version gets the alias ``challenger``; it becomes ``champion``
only when its ``register.metric`` beats the current champion's by
``register.min_improvement`` (relative), both scored now by the same evaluation
(``register.eval_samples`` samples, ``register.seed``) on the current validation data,
with the champion loaded back from the registry. The first version becomes champion.
A ``generate`` model whose privacy audit (eval/metrics.json's ``privacy`` section, on
the version as ``eval/privacy.*``) exceeds ``register.max_memorisation`` is never
promoted; the decision's reason names the figure and by how much.
The decision and both scores go to registry/decision.json and onto the version as tags.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from gan.atomic import atomic_write_json
from gan.config import Params, load_params
from gan.errors import GanError
from gan.stages import stage_parser

EXPERIMENT = "gan-register"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", default="models/generator", help="exported generator (default: models/generator)")
    parser.add_argument("--features", default="models/features", help="feature network (default: models/features)")
    parser.add_argument("--eval", default="eval", help="directory with metrics.json and samples.png (default: eval)")
    parser.add_argument("--tuned", default="tune/best.json", help="tune result logged with the version (default: tune/best.json)")
    parser.add_argument("--out", default="registry/decision.json", help="decision file (default: registry/decision.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    cfg, data = params.register, Path(args.data or params.prepare.out)
    start = time.perf_counter()

    # every local input is read and checked before the registry is touched
    from gan.data import read_manifest
    from gan.export import read_spec
    from gan.features import load_feature_net
    from gan.registry import incompatibility, numeric_metrics, register_generator
    from gan.tasks import make_task

    spec = read_spec(args.model)
    manifest = read_manifest(data)
    eval_dir = Path(args.eval)
    eval_metrics = read_eval_metrics(eval_dir / "metrics.json", cfg.metric)
    samples = eval_dir / "samples.png"
    if not samples.exists():
        raise GanError(f"{samples} does not exist; run the evaluate stage first (dvc repro evaluate).")
    check_same_data(spec, manifest, args.model, data)
    problem = incompatibility(spec, manifest)
    if problem:
        raise GanError(f"{args.model} cannot be scored on {data}: {problem}; re-run train on the current data (dvc repro train).")
    refused = privacy_refusal(eval_metrics, cfg.max_memorisation, eval_dir / "metrics.json", spec)
    tuned = read_optional_json(Path(args.tuned))
    feature_net = load_feature_net(args.features)
    task = make_task(params, manifest)
    if spec["task"] != task.name:
        raise GanError(f"{args.model} is a '{spec['task']}' model but params.yaml's model.task is '{task.name}'; re-run train (dvc repro train).")

    from gan.tracking import check_reachable, ensure_experiment, git_commit, redact

    uri = check_reachable()
    experiment_id = ensure_experiment(EXPERIMENT)
    commit, data_hash = git_commit(), str(manifest.get("hash", "unknown"))
    decision, version = register_generator(
        args.model,
        cfg.model_name,
        metric=cfg.metric,
        min_improvement=cfg.min_improvement,
        score=scorer(params, task, feature_net, data),
        manifest=manifest,
        params=version_params(spec, tuned, params),
        metrics={f"eval/{k}": v for k, v in numeric_metrics(eval_metrics).items()},
        tags={"git_commit": commit, "data_hash": data_hash, "stage": "register", "task": str(spec["task"]), "generator_arch": str(spec.get("arch"))},
        version_tags={f"params/{k}": json.dumps(v, sort_keys=True, default=str) for k, v in settings(spec, tuned).items()},
        artifacts={"samples": samples, "eval_metrics": eval_dir / "metrics.json"},
        experiment_id=experiment_id,
        refused=refused,
    )
    record = {
        **decision.as_dict(),
        "model_name": cfg.model_name,
        "model_uri": f"models:/{cfg.model_name}/{version.version}",
        "alias": "champion" if decision.promoted else "challenger",
        "run_id": version.run_id,
        "eval_samples": cfg.eval_samples,
        "seed": cfg.seed,
        "git_commit": commit,
        "data_hash": data_hash,
        "tracking_uri": redact(uri),
    }
    atomic_write_json(args.out, record)
    champion = f"v{decision.champion_version} {decision.champion_score:.4g}" if decision.champion_score is not None else "none"
    print(
        f"register: {cfg.model_name} v{version.version} {cfg.metric} {decision.challenger_score:.4g} vs champion {champion} -> "
        f"{record['alias']} ({decision.reason}); {args.out} in {time.perf_counter() - start:.1f}s"
    )
    return 0


def read_eval_metrics(path: Path, metric: str) -> dict[str, Any]:
    """eval/metrics.json; a diverged generator (non-finite metric) is never registered."""
    if not path.exists():
        raise GanError(f"{path} does not exist; run the evaluate stage first (dvc repro evaluate).")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise GanError(f"{path} is not valid JSON; re-run the evaluate stage (dvc repro -f evaluate).") from None
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise GanError(f"{path}: {metric} = {value!r} is not a finite number; the generator diverged or was not evaluated, so it is not registered.")
    return metrics


def privacy_refusal(eval_metrics: dict[str, Any], max_memorisation: float | None, path: Path, spec: dict[str, Any]) -> str | None:
    """The sentence that keeps a generator from promotion when its privacy audit exceeds ``register.max_memorisation``, else None.

    A ``generate`` model evaluated without the audit (an eval/metrics.json from before
    it) cannot be vouched for: with a bound set, it must be evaluated again.
    """
    from gan.privacy import memorisation_excess

    if max_memorisation is None or spec.get("inference", spec.get("task")) != "generate":
        return None
    audit = eval_metrics.get("privacy")
    if not isinstance(audit, dict):
        raise GanError(f"{path} has no privacy section but register.max_memorisation is set; re-run the evaluate stage (dvc repro -f evaluate).")
    return memorisation_excess(audit, max_memorisation)


def read_optional_json(path: Path) -> dict[str, Any]:
    """A JSON file that may be absent (tune/best.json when the tune stage is not part of the run)."""
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise GanError(f"{path} is not valid JSON; re-run the tune stage (dvc repro tune).") from None
    return value if isinstance(value, dict) else {}


def check_same_data(spec: dict[str, Any], manifest: dict[str, Any], model: str, data: Path) -> None:
    """The generator must come from the prepared data it is registered with (its data hash)."""
    trained_on, current = spec.get("data_hash"), manifest.get("hash")
    if trained_on and current and trained_on != current:
        raise GanError(f"{model} was trained on data {trained_on} but {data} is {current}; re-run train and evaluate (dvc repro) before registering.")


def settings(spec: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """How the generator was made: its train/model config (as trained, from config.json) and the tune result."""
    return {"train": spec.get("train", {}), "model": spec.get("model", {}), "tuned": spec.get("tuned", {}), "tune": tuned}


def version_params(spec: dict[str, Any], tuned: dict[str, Any], params: Params) -> dict[str, Any]:
    """Flat parameters for the run and the logged model (``train.lr_G``, ``tune.score``, ``register.seed``, ...)."""
    from gan.registry import flatten

    return flatten({**settings(spec, tuned), "register": params.register.model_dump()})


def scorer(params: Params, task: Any, feature_net: Any, data: Path) -> Any:
    """``score(model) -> register.metric`` of a loaded model version on the validation split.

    The task's own evaluation with the same seed and sample count for the challenger and
    the champion; the metric's other knobs are the evaluate stage's, so the scores speak
    of the same FID/KID.
    """
    from gan.tasks.base import EvalSettings

    cfg, ev = params.register, params.evaluate
    settings = EvalSettings(num_samples=cfg.eval_samples, seed=cfg.seed, batch_size=ev.batch_size, nearest_k=ev.nearest_k,
                            kid_subset_size=ev.kid_subset_size)  # fmt: skip

    def score(model: Any) -> float:
        return float(task.evaluate(model.nets, feature_net, data, settings)[cfg.metric])

    return score

