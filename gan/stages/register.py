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
``register.min_improvement`` (relative; in the metric's direction: lower FID, higher AUROC), both scored now by the same evaluation
(``register.eval_samples`` samples, ``register.seed``) on the current validation data,
with the champion loaded back from the registry. The first version becomes champion.
Weights already registered under the name (same ``weights_sha256``) add no version; a
generator whose output (channels, image size, classes) differs from the champion's is
refused unless ``register.allow_schema_change: true``.
A ``generate`` model whose privacy audit (eval/metrics.json's ``privacy`` section, on
the version as ``eval/privacy.*``) exceeds ``register.max_memorisation`` is never
promoted; the decision's reason names the figure and by how much.
The decision and both scores go to registry/decision.json and onto the version as tags.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

from gan.atomic import atomic_write_json
from gan.config import Params, load_params
from gan.errors import GanError
from gan.paths import check_outputs
from gan.registry import EXPERIMENT
from gan.stages import stage_parser
from gan.tracking import store_file

# the audit figures put on a version as tags: the gated worst one and the headline share
PRIVACY_VERSION_TAGS = ("memorisation", "dcr_share/pixel")


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
    check_outputs({"--out": args.out}, {"--data": data, "--model": args.model, "--features": args.features, "--eval": args.eval,
                                        "--tuned": args.tuned, "--params": args.params, "the MLflow store": store_file()})
    start = time.perf_counter()

    # every local input is read and checked before the registry is touched
    from gan.data import read_manifest
    from gan.export import read_spec
    from gan.features import load_feature_net
    from gan.registry import incompatibility, numeric_metrics, register_generator
    from gan.tasks import make_task

    check_generator_runs(args.model)
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
    try:
        task.metric.check("register.metric", cfg.metric, task.name)
    except ValueError as err:
        raise GanError(str(err)) from None

    from gan.tracking import check_reachable, ensure_experiment, git_commit, redact, source_tags

    uri = check_reachable()
    experiment_id = ensure_experiment(EXPERIMENT)
    commit, data_hash = git_commit(), str(manifest.get("hash", "unknown"))
    links = provenance(spec, tuned)
    decision, version = register_generator(
        args.model,
        cfg.model_name,
        metric=cfg.metric,
        min_improvement=cfg.min_improvement,
        score=scorer(params, task, feature_net, data),
        manifest=manifest,
        params=version_params(spec, tuned, params),
        metrics={f"eval/{k}": v for k, v in numeric_metrics(eval_metrics).items()},
        tags={"git_commit": commit, "data_hash": data_hash, "task": str(spec["task"]), "generator_arch": type(task).variant(spec)},
        version_tags={**{k: v for k, v in links.items() if k.endswith("_run_id")}, f"eval/{cfg.metric}": repr(float(eval_metrics[cfg.metric])),
                      # the privacy gate's figures travel with the version (the rest are the evaluate run's metrics)
                      **{f"eval/privacy.{k}": repr(float(v)) for k, v in (eval_metrics.get("privacy") or {}).items()
                         if k in PRIVACY_VERSION_TAGS}},
        artifacts={"samples": samples, "eval_metrics": eval_dir / "metrics.json"},
        experiment_id=experiment_id,
        allow_schema_change=cfg.allow_schema_change,
        log_options={
            "run_tags": {"stage": "register", **links, **source_tags("pipelines/register.py", commit)},
            "run_json": {"settings.json": settings(spec, tuned)},
            "description": describe(type(task), spec, links),
        },
        lower_is_better=task.metric.lower(cfg.metric),
        refused=refused,
    )
    record = {
        **decision.as_dict(),
        "model_name": cfg.model_name,
        "model_uri": f"models:/{cfg.model_name}/{version.version}",
        # what augment_eval needs to know of the model without loading it (the task's declaration)
        "task": task.name,
        "augments": type(task).augments(spec),
        "alias": alias_of(decision, version),
        "run_id": version.run_id,
        "eval_samples": cfg.eval_samples,
        "seed": cfg.seed,
        "git_commit": commit,
        "data_hash": data_hash,
        "tracking_uri": redact(uri),
    }
    atomic_write_json(args.out, record)
    if decision.duplicate_of:
        print(f"register: {cfg.model_name} v{version.version} already holds these weights, so no new version was registered "
              f"(champion v{decision.champion_version} stays); {args.out} in {time.perf_counter() - start:.1f}s")  # fmt: skip
        return 0
    champion = f"v{decision.champion_version} {decision.champion_score:.4g}" if decision.champion_score is not None else "none"
    print(
        f"register: {cfg.model_name} v{version.version} {cfg.metric} {decision.challenger_score:.4g} vs champion {champion} -> "
        f"{record['alias']} ({decision.reason}); {args.out} in {time.perf_counter() - start:.1f}s"
    )
    return 0


def check_generator_runs(model_dir: str | Path) -> None:
    """Build the exported model and answer its task's input example, before anything is registered.

    A version is only worth registering when it loads: MLflow would happily store a
    config.json naming an unknown architecture, and every consumer of that version
    (the champion comparison, ``gan augment``, ``gan translate``) would then crash on it.
    The answer must have the dtype and shape of the task's signature and finite values.
    """
    import numpy as np

    from gan.export import read_spec
    from gan.inference import inference_module, inference_name, runner_for

    config = Path(model_dir) / "config.json"
    try:
        spec = read_spec(model_dir)
        module = inference_module(inference_name(spec))
        answer = runner_for(str(model_dir)).predict(module.input_example(spec))
    except GanError as err:  # a config.json or weights file that does not describe a model that loads
        raise GanError(f"the generator in {model_dir} cannot be registered: {str(err).rstrip('.')}; nothing was registered.") from None
    except Exception as err:  # whatever building or running the described networks raises
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else "no detail"
        raise GanError(
            f"the generator in {model_dir} cannot be built and run from {config} ({type(err).__name__}: {detail}); "
            "re-export it with the train stage (dvc repro train), nothing was registered."
        ) from None
    for out in module.signature(spec).outputs.inputs:  # every declared output: dtype, shape, finite values
        value = np.asarray(answer[out.name])
        shape_ok = len(out.shape) == value.ndim and all(s in (-1, v) for s, v in zip(out.shape, value.shape, strict=False))
        finite = value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
        if value.dtype != out.type or not shape_ok or not finite:
            got = "non-finite values" if shape_ok and value.dtype == out.type else f"{out.name} of shape {value.shape[1:]} ({value.dtype})"
            raise GanError(
                f"the generator in {model_dir} produces {got} instead of {out.name} of shape {tuple(out.shape)[1:]} ({out.type}) as {config} says; "
                "re-export it with the train stage, nothing was registered."
            )


def alias_of(decision: Any, version: Any) -> str:
    """The alias the decision left on ``version``: champion, challenger, or (an older duplicate) the ones it holds."""
    if decision.duplicate_of:
        return ",".join(sorted(version.aliases or [])) or "none"
    return "champion" if decision.promoted else "challenger"


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


def provenance(spec: dict[str, Any], tuned: dict[str, Any]) -> dict[str, str]:
    """``train_run_id`` / ``tune_run_id`` (and their experiment ids) of the runs that made the generator, where known.

    The train run's id is in the exported config.json; the tune search's parent run is
    found by its name (tune/best.json's ``search``) in the ``gan-tune`` experiment.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client, found = MlflowClient(), {}
    with contextlib.suppress(MlflowException):
        if spec.get("mlflow_run_id"):
            run = client.get_run(str(spec["mlflow_run_id"]))
            found.update(train_run_id=run.info.run_id, train_experiment_id=run.info.experiment_id)
        experiment = client.get_experiment_by_name("gan-tune")
        if tuned.get("search") and experiment is not None:
            runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{tuned['search']}' and tags.stage = 'tune'",
                                      order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
            if runs:
                found.update(tune_run_id=runs[0].info.run_id, tune_experiment_id=runs[0].info.experiment_id)
    return found


def describe(task: Any, spec: dict[str, Any], links: dict[str, str]) -> str:
    """The version's description (markdown): what it is (the task class's words) and one-click links to the runs that made it."""
    lines = [task.describe(spec)]
    for stage in ("train", "tune"):
        if f"{stage}_run_id" in links:
            lines.append(f"- {stage}: [run {links[f'{stage}_run_id'][:8]}](#/experiments/{links[f'{stage}_experiment_id']}/runs/{links[f'{stage}_run_id']})")
    return "\n".join(lines)


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

