"""Logging a model version: the exported model as a pyfunc (models-from-code), its metrics and tags; the whole register step.

    version = log_generator("models/generator", "digits-gan", params=..., metrics=..., tags=...)
    decision, version = register_generator("models/generator", "digits-gan", metric="fid", ...)
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gan.registry.code import MODEL_ARTIFACT_NAME, MODEL_FILE, stage_model_code
from gan.registry.promotion import (
    Decision,
    apply_decision,
    current_champion,
    decide,
    incompatibility,
    promotion_lock,
)
from gan.registry.uris import ModelRef, load_model

# ---------------------------------------------------------------- logging a version


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers in a (nested) metrics mapping, flattened; booleans and strings are left out."""
    return {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def pip_requirements() -> list[str]:
    """What loading the model needs: no Ray, DVC or training libraries."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "safetensors", "numpy", "pandas")]


@contextlib.contextmanager
def _registry_notes_hidden() -> Iterator[None]:
    """Hide MLflow's "Successfully registered model" / "Created version" notes.

    MLflow prints them straight to stderr (not through logging, so MLFLOW_LOGGING_LEVEL
    cannot quiet them) and the register stage's own line says the same. On a failure
    whatever was printed is passed on before the error.
    """
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    except BaseException:
        sys.stderr.write(buffer.getvalue())
        raise


def log_generator(
    generator_dir: str | Path,
    model_name: str,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    version_tags: Mapping[str, str] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    experiment_id: str | None = None,
    run_name: str = "register",
) -> Any:
    """Log ``generator_dir`` as a pyfunc model in a new run, register it; return the ModelVersion.

    ``params`` go to the run and the logged model, ``metrics`` to both and (as strings) to
    the version's tags, ``tags`` to the run and the version, ``version_tags`` (long values
    such as whole configs as JSON) to the version only, ``artifacts`` (e.g. the sample
    grid) to the run and into the model itself, so they travel with the version.
    """

    import mlflow
    from mlflow import MlflowClient

    from gan.export import read_spec
    from gan.inference import inference_module, inference_name
    from gan.mlflow_model import GENERATOR_ARTIFACT

    spec = read_spec(generator_dir)
    extra = {k: str(v) for k, v in (artifacts or {}).items()}
    str_params = {k: _param_value(v) for k, v in params.items()}
    with tempfile.TemporaryDirectory(prefix="gan-model-code-") as tmp, mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(dict(tags))
        _log_params(str_params)
        for path in extra.values():
            mlflow.log_artifact(path)
        with _registry_notes_hidden():
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_NAME,
                python_model=str(MODEL_FILE),
                artifacts={GENERATOR_ARTIFACT: str(generator_dir), **extra},
                code_paths=[str(stage_model_code(Path(tmp)))],
                signature=inference_module(inference_name(spec)).signature(spec),
                input_example=inference_module(inference_name(spec)).input_example(spec),
                pip_requirements=pip_requirements(),
                registered_model_name=model_name,
                params=str_params,
                tags=dict(tags),
            )
        if metrics:
            mlflow.log_metrics(dict(metrics), model_id=info.model_id)
        run_id = run.info.run_id
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in {**tags, **(version_tags or {})}.items():
        client.set_model_version_tag(model_name, version, key, value)
    for key, value in metrics.items():
        client.set_model_version_tag(model_name, version, key, repr(value))
    client.update_model_version(model_name, version, description=f"{spec['task']} model ({', '.join(e['network'] for e in spec['networks'].values())}) from run {run_id}")
    return client.get_model_version(model_name, version)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit for a parameter value


def _log_params(params: Mapping[str, str]) -> None:
    import mlflow

    items = list(params.items())
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
        mlflow.log_params(dict(items[start : start + 100]))


# ---------------------------------------------------------------- the whole register step


def register_generator(
    generator_dir: str | Path,
    model_name: str,
    *,
    metric: str,
    min_improvement: float,
    score: Callable[[Any], float],
    manifest: Mapping[str, Any],
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    version_tags: Mapping[str, str] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    experiment_id: str | None = None,
    refused: str | None = None,
) -> tuple[Decision, Any]:
    """Register a new version, score it and the current champion with ``score``, apply the decision.

    ``refused`` (one sentence, e.g. the privacy audit's excess over ``register.max_memorisation``)
    registers the version as challenger but never promotes it.

    Returns the decision and the new ModelVersion.

    ``score(model)`` evaluates a loaded TaskModel on the current validation data and
    returns ``metric`` (lower is better); it is called on the new version and on the
    champion, both loaded back from the registry, so both are scored the same way now.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    version = log_generator(
        generator_dir, model_name, params=params, metrics=metrics, tags=tags, version_tags=version_tags, artifacts=artifacts, experiment_id=experiment_id
    )
    challenger = ModelRef(name=model_name, version=str(version.version), requested=f"models:/{model_name}/{version.version}", run_id=version.run_id)
    challenger_score = float(score(load_model(challenger)))
    # The champion is read, scored and replaced under the lock: a register running at the
    # same time either finished before (we compare with its result) or waits for us.
    with promotion_lock(model_name):
        champion = current_champion(client, model_name)
        champion_score, unusable = None, None
        if champion is not None:
            model = load_model(champion)
            unusable = incompatibility(model.spec, manifest)
            champion_score = None if unusable else float(score(model))
        decision = decide(metric, challenger.version, challenger_score, champion.version if champion else None, champion_score, min_improvement, unusable, refused)
        apply_decision(client, model_name, decision)
    return decision, version
