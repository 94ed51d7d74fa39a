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

from gan.errors import GanError
from gan.registry.code import MODEL_ARTIFACT_NAME, MODEL_FILE, stage_model_code
from gan.registry.promotion import (
    Decision,
    apply_decision,
    check_schema,
    current_champion,
    decide,
    duplicate_decision,
    incompatibility,
    promotion_lock,
    version_with_weights,
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


EXPERIMENT = "gan-register"  # where versions are logged unless the caller names an experiment


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
    created: dict[str, str] | None = None,
    run_tags: Mapping[str, str] | None = None,
    run_json: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Any:
    """Log ``generator_dir`` as a pyfunc model in a new run, register it; return the ModelVersion.

    ``params`` go to the run and the logged model, ``metrics`` to both, ``tags`` to the run
    and the version, ``version_tags`` to the version only and ``run_tags`` to the run only.
    A version carries a few tags (each is a row of the registered-model page); whole
    configs go to the run as JSON files (``run_json``: file name -> value). ``artifacts``
    (e.g. the sample grid) go to the run and into the model itself, so they travel with
    the version. ``description`` (markdown) is the version's; by default it names the run.
    ``created`` receives ``run_id`` and ``model_id`` as soon as they exist, so that a
    caller can remove them when a later step fails (:func:`roll_back`).
    """

    import mlflow
    from mlflow import MlflowClient

    from gan.export import read_spec
    from gan.inference import inference_module, inference_name
    from gan.mlflow_model import GENERATOR_ARTIFACT
    from gan.tracking import ensure_experiment

    spec = read_spec(generator_dir)
    # not MLflow's "Default" experiment: its artifacts would land in ./mlruns of the caller
    experiment_id = experiment_id or ensure_experiment(EXPERIMENT)
    extra = {k: str(v) for k, v in (artifacts or {}).items()}
    str_params = {k: _param_value(v) for k, v in params.items()}
    with tempfile.TemporaryDirectory(prefix="gan-model-code-") as tmp, mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        if created is not None:
            created["run_id"] = run.info.run_id
        mlflow.set_tags({**tags, **(run_tags or {})})
        _log_params(str_params)
        for name, value in (run_json or {}).items():
            mlflow.log_dict(value, name)
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
        if created is not None:
            created["model_id"] = info.model_id
        if metrics:
            mlflow.log_metrics(dict(metrics), model_id=info.model_id)
        run_id = run.info.run_id
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in {**tags, **(version_tags or {})}.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.update_model_version(model_name, version, description=description or f"{spec['task']} model ({', '.join(e['network'] for e in spec['networks'].values())}) from run {run_id}")
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
    lower_is_better: bool = True,
    allow_schema_change: bool = False,
    log_options: Mapping[str, Any] | None = None,
    refused: str | None = None,
) -> tuple[Decision, Any]:
    """Register a new version, score it and the current champion with ``score``, apply the decision.

    ``refused`` (one sentence, e.g. the privacy audit's excess over ``register.max_memorisation``)
    registers the version as challenger but never promotes it.

    Returns the decision and the new ModelVersion.

    ``score(model)`` evaluates a loaded TaskModel on the current validation data and
    returns ``metric`` (lower is better unless ``lower_is_better`` is false, as for PSNR); it is called on the new version and on the
    champion, both loaded back from the registry, so both are scored the same way now.

    Before anything is registered: weights identical to a registered version's (by
    ``weights_sha256``) add no version (the decision names that version, aliases stay);
    a model whose output schema differs from the champion's is refused unless
    ``allow_schema_change`` (``register.allow_schema_change``). ``log_options`` are passed
    on to :func:`log_generator` (``run_tags``, ``run_json``, ``description``). The register
    run spans the scoring and the decision (its end time and status are theirs), and
    holds ``decision.json``.
    """
    from mlflow import MlflowClient

    from gan.export import read_spec

    client = MlflowClient()
    spec = read_spec(generator_dir)
    same = version_with_weights(client, model_name, spec.get("weights_sha256"))
    if same is not None:
        # read back by name and version: search results carry no aliases
        return duplicate_decision(client, model_name, metric, min_improvement, same), client.get_model_version(model_name, str(same.version))
    champion_model = check_schema(client, model_name, spec, generator_dir, allow_schema_change)
    tags = {**tags, "weights_sha256": str(spec.get("weights_sha256", ""))}
    aliases_before = alias_snapshot(client, model_name)
    created: dict[str, str] = {}
    try:
        decision, version = _register_and_decide(
            client, generator_dir, model_name, metric, min_improvement, score, manifest, created, lower_is_better, champion_model, refused,
            params=params, metrics=metrics, tags=tags, version_tags=version_tags, artifacts=artifacts, experiment_id=experiment_id,
            **(log_options or {}),
        )  # fmt: skip
        client.log_dict(version.run_id, decision.as_dict(), "decision.json")
        with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints the run's URL again; the run already said it
            client.set_terminated(version.run_id, "FINISHED")
        return decision, version
    except BaseException as err:
        # a half-made version must not stay behind: consumers of the registry would find a
        # version without its decision, or an alias pointing at it
        try:
            undone = roll_back(client, model_name, aliases_before, created)
        except Exception as again:
            if not isinstance(err, Exception):
                raise
            raise GanError(
                f"registering {model_name} failed half-way ({_reason(err)}) and putting the registry back failed too ({_reason(again)}); "
                f"delete what run {created.get('run_id', '?')} registered under {model_name} by hand."
            ) from None
        if not isinstance(err, Exception):  # SIGINT / SIGTERM: rolled back, the stage says it was interrupted
            raise
        what = f" ({', '.join(undone)} removed)" if undone else ""
        raise GanError(f"registering {model_name} failed half-way ({_reason(err)}); the registry was put back as it was{what}.") from None


def _reason(err: BaseException) -> str:
    """An error as a short clause: a GanError's own sentence, else its type and first line."""
    text = str(err).strip()
    if isinstance(err, GanError):
        return text.rstrip(".")
    first = text.splitlines()[0][:200] if text else "no detail"
    return f"{type(err).__name__}: {first}"


def alias_snapshot(client: Any, name: str) -> dict[str, str] | None:
    """The aliases of registered model ``name`` (alias -> version), or None when it does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        return None


def roll_back(client: Any, name: str, aliases_before: dict[str, str] | None, created: Mapping[str, str]) -> list[str]:
    """Remove what one register call created (versions of its run, the run, its logged model,
    the registered model when the call created it) and put back aliases the call moved.

    Returns what was removed, for the message. Aliases that another register moved in the
    meantime are left alone: only aliases that pointed at a removed version are restored.
    """
    from mlflow.exceptions import MlflowException

    undone: list[str] = []
    run_id = created.get("run_id")
    if run_id:
        for mv in client.search_model_versions(f"run_id = '{run_id}'"):
            if mv.name == name:
                client.delete_model_version(name, mv.version)
                undone.append(f"version {mv.version}")
    if aliases_before is None:
        if not client.search_model_versions(f"name = '{name}'"):
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(name)
                undone.append(f"registered model {name}")
    else:
        now = alias_snapshot(client, name) or {}
        for alias, version in aliases_before.items():
            if alias not in now:  # it pointed at a version this call removed
                with contextlib.suppress(MlflowException):
                    client.set_registered_model_alias(name, alias, version)
    if created.get("model_id"):
        with contextlib.suppress(MlflowException):
            client.delete_logged_model(created["model_id"])
    if run_id:
        client.delete_run(run_id)
        undone.append(f"run {run_id}")
    return undone


def _register_and_decide(
    client: Any,
    generator_dir: str | Path,
    model_name: str,
    metric: str,
    min_improvement: float,
    score: Callable[[Any], float],
    manifest: Mapping[str, Any],
    created: dict[str, str],
    lower_is_better: bool,
    champion_model: tuple[str, Any] | None,
    refused: str | None,
    **log_kwargs: Any,
) -> tuple[Decision, Any]:
    """The steps of :func:`register_generator` that write to the registry, in order."""
    version = log_generator(generator_dir, model_name, created=created, **log_kwargs)
    challenger = ModelRef(name=model_name, version=str(version.version), requested=f"models:/{model_name}/{version.version}", run_id=version.run_id)
    challenger_score = float(score(load_model(challenger)))
    # The champion is read, scored and replaced under the lock: a register running at the
    # same time either finished before (we compare with its result) or waits for us.
    with promotion_lock(model_name):
        champion = current_champion(client, model_name)
        champion_score, unusable = None, None
        if champion is not None:
            # the champion check_schema loaded, when it is still the champion
            model = champion_model[1] if champion_model and champion_model[0] == champion.version else load_model(champion)
            unusable = incompatibility(model.spec, manifest)
            champion_score = None if unusable else float(score(model))
        decision = decide(metric, challenger.version, challenger_score, champion.version if champion else None, champion_score, min_improvement, unusable, lower_is_better, refused)
        apply_decision(client, model_name, decision)
    return decision, version
