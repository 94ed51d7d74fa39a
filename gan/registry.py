"""MLflow Model Registry: log the exported generator as a model version, aliases, gated promotion.

    python pipelines/register.py            # what `dvc repro register` runs

    version = log_generator("models/generator", "digits-gan", params=..., metrics=..., tags=...)
    decision = promote(client, "digits-gan", version, challenger_score, champion, min_improvement)

A new version always gets the alias ``challenger``. It gets ``champion`` only when its
score (lower is better: FID or KID) beats the current champion's by ``min_improvement``
(relative), both measured now by the same evaluation on the current validation data,
with the champion loaded back from the registry; the first version becomes champion.

The logged model is a pyfunc model defined by ``gan/mlflow_model.py`` (models-from-code):
weights are safetensors, and the only project code stored with it is the import closure
of the model definitions (:func:`model_code_files`), never the training code. See
``gan/mlflow_model.py`` for why.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gan.errors import GanError

CHALLENGER = "challenger"
CHAMPION = "champion"
EXPERIMENT = "gan-register"  # where versions are logged unless the caller names an experiment
GAN_SRC = Path(__file__).resolve().parent  # .../gan
MODEL_FILE = GAN_SRC / "mlflow_model.py"
# What the pyfunc model imports: the model file itself and every architecture build_G may pick.
MODEL_CODE_ENTRIES = ("gan.mlflow_model", "gan.models")
# Modules that must never travel with a model version: they belong to training, data
# preparation or orchestration, and a model that needs them is not independent of training.
TRAINING_SIDE = (
    "gan.training", "gan.tuning", "gan.losses", "gan.data", "gan.evaluation", "gan.metrics",
    "gan.features", "gan.config", "gan.ema", "gan.diffaugment", "gan.registry", "gan.augment",
    "gan.cli", "gan.tracking", "gan.retrain",
)  # fmt: skip
MODEL_ARTIFACT_NAME = "generator"


# ---------------------------------------------------------------- code stored with the model


def module_path(module: str, src: Path = GAN_SRC) -> Path | None:
    """The file of ``gan.x.y`` under ``src`` (the ``gan`` directory): a module or a package's ``__init__``."""
    parts = module.split(".")[1:]
    base = src.joinpath(*parts)
    if base.is_dir() and (base / "__init__.py").exists():
        return base / "__init__.py"
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    return None


def gan_imports(path: Path, module: str, src: Path = GAN_SRC) -> set[str]:
    """Modules of the ``gan`` package imported in ``path``, also inside functions (not under TYPE_CHECKING)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "gan")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "gan":
                continue
            found.add(base)
            # `from gan.models import mlp` imports a submodule, `from gan.models import build_G` does not
            found.update(f"{base}.{a.name}" for a in node.names if module_path(f"{base}.{a.name}", src) is not None)
    return found


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (never run, so never needed)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def model_code_files(src: Path = GAN_SRC, entries: tuple[str, ...] = MODEL_CODE_ENTRIES) -> list[Path]:
    """The ``gan`` files the pyfunc model needs, relative to ``src``: the import closure of ``entries``.

    A package counts with all its modules (``build_G`` chooses among them at run time), and
    every parent package's ``__init__.py`` is included. Raises GanError when the closure
    reaches a training-side module.
    """
    # (module, whole package?): parents of a module only need their __init__.py
    todo: list[tuple[str, bool]] = [(m, True) for m in entries]
    seen: set[tuple[str, bool]] = set()
    files: set[Path] = set()
    while todo:
        module, whole = todo.pop()
        whole = whole and module != "gan"  # the top-level package is never taken whole
        if (module, whole) in seen:
            continue
        seen.add((module, whole))
        if module.startswith(TRAINING_SIDE):
            raise GanError(f"the model code imports {module}, which belongs to training; move what gan/models or gan/export.py need out of it.")
        path = module_path(module, src)
        if path is None:
            continue  # a name imported from a module, not a module
        parts = module.split(".")
        todo.extend((".".join(parts[:i]), False) for i in range(1, len(parts)))
        members = [path]
        if whole and path.name == "__init__.py":
            members += sorted(p for p in path.parent.glob("*.py") if p.name != "__init__.py")
            todo.extend((f"{module}.{p.stem}", True) for p in members[1:])
        for member in members:
            files.add(member)
            member_module = module if member == path else f"{module}.{member.stem}"
            todo.extend((m, True) for m in gan_imports(member, member_module, src))
    return sorted(p.relative_to(src) for p in files)


def stage_model_code(dest: Path, src: Path = GAN_SRC) -> Path:
    """Copy :func:`model_code_files` into ``dest/gan`` and return that directory (a ``code_paths`` entry)."""
    root = Path(dest) / "gan"
    for rel in model_code_files(src):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, root / rel)
    return root


# ---------------------------------------------------------------- model URIs


@dataclass(frozen=True)
class ModelRef:
    """A registered model resolved to one concrete version."""

    name: str
    version: str
    requested: str
    run_id: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    if not uri.startswith("models:/"):
        raise GanError(f"model URI {uri!r} is not a registry URI; use models:/<name>@<alias> or models:/<name>/<version>.")
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise GanError(f"model URI {uri!r} is malformed; use models:/<name>@<alias> or models:/<name>/<version>.")


def resolve_model(uri: str, client: Any | None = None) -> ModelRef:
    """Resolve an alias or version URI once to a concrete version; GanError names what is unknown."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient()
    name, alias, version = parse_model_uri(uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise GanError(f"registered model '{name}' does not exist in the MLflow registry; check the name in {uri} or run the register stage.") from None
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        what = f"alias '{alias}'" if alias else f"version {version}"
        raise GanError(f"model '{name}' has no {what}; check {uri} (aliases: {', '.join(aliases(client, name)) or 'none'}).") from None
    return ModelRef(name=name, version=str(mv.version), requested=uri, run_id=mv.run_id)


def aliases(client: Any, name: str) -> list[str]:
    """Aliases currently set on registered model ``name``."""
    return sorted(client.get_registered_model(name).aliases)


def load_model(ref: ModelRef) -> Any:
    """Load ``ref`` from the registry and return the pyfunc's GeneratorModel (G at ``.G``)."""
    import mlflow

    return mlflow.pyfunc.load_model(ref.uri).unwrap_python_model()


# ---------------------------------------------------------------- gated promotion


@dataclass(frozen=True)
class Decision:
    """The outcome of comparing a challenger with the current champion (lower scores are better)."""

    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    min_improvement: float
    # the version whose weights are byte-identical to the challenger's: nothing new was registered
    duplicate_of: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold(champion_score: float, min_improvement: float) -> float:
    """The score a challenger must beat: ``champion * (1 - min_improvement)``, sign-safe for KID < 0."""
    return champion_score - min_improvement * abs(champion_score)


def decide(
    metric: str,
    challenger_version: str,
    challenger_score: float,
    champion_version: str | None,
    champion_score: float | None,
    min_improvement: float,
    champion_unusable: str | None = None,
) -> Decision:
    """Promote the first version, a challenger whose champion cannot be evaluated, or one that beats it."""
    common = dict(metric=metric, challenger_version=challenger_version, challenger_score=challenger_score, champion_version=champion_version, champion_score=champion_score, min_improvement=min_improvement)
    if not math.isfinite(challenger_score):
        return Decision(False, f"challenger {metric} = {challenger_score} is not finite", **common)
    if champion_version is None:
        return Decision(True, "first version: no champion yet", **common)
    if champion_unusable:
        return Decision(True, f"champion v{champion_version} cannot be evaluated on the current data ({champion_unusable})", **common)
    assert champion_score is not None
    bar = threshold(champion_score, min_improvement)
    if challenger_score < bar or not math.isfinite(champion_score):
        return Decision(True, f"{metric} {challenger_score:.6g} < {bar:.6g} (champion v{champion_version} {champion_score:.6g}, min_improvement {min_improvement})", **common)
    return Decision(False, f"{metric} {challenger_score:.6g} does not beat {bar:.6g} (champion v{champion_version} {champion_score:.6g}, min_improvement {min_improvement})", **common)


def incompatibility(spec: Mapping[str, Any], manifest: Mapping[str, Any]) -> str | None:
    """Why a generator cannot be scored on a prepared data set (image shape or classes differ), or None."""
    want = (int(manifest["channels"]), int(manifest["image_size"]))
    have = (int(spec["channels"]), int(spec["image_size"]))
    if want != have:
        return f"it makes {have[0]}x{have[1]}x{have[1]} images, the data is {want[0]}x{want[1]}x{want[1]}"
    classes = int(spec.get("num_classes", 0))
    if classes and classes != int(manifest.get("num_classes") or 0):
        return f"it knows {classes} classes, the data has {manifest.get('num_classes')}"
    return None


SCHEMA_KEYS = ("task", "channels", "image_size", "num_classes", "class_names")


def output_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a downstream job loading the model gets: task, image shape, classes (config.json fields)."""
    return {
        "task": str(spec.get("task", "generate")),  # generators exported before tasks existed generate
        "channels": int(spec["channels"]),
        "image_size": int(spec["image_size"]),
        "num_classes": int(spec.get("num_classes", 0)),
        "class_names": [str(c) for c in spec.get("class_names") or []],
    }


def schema_change(champion: Mapping[str, Any], challenger: Mapping[str, Any]) -> str | None:
    """``"channels 1 -> 3, image_size 16 -> 32"`` when the two specs' output schemas differ, else None."""
    old, new = output_schema(champion), output_schema(challenger)
    changes = []
    for key in SCHEMA_KEYS:
        if old[key] != new[key]:
            if key == "class_names":
                changes.append(f"class names {_short(old[key])} -> {_short(new[key])}")
            else:
                changes.append(f"{key} {old[key]} -> {new[key]}")
    return ", ".join(changes) or None


def _short(names: list[str]) -> str:
    return "[" + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") + "]"


def version_with_weights(client: Any, name: str, weights_sha256: str | None) -> Any | None:
    """The registered version of ``name`` whose weights have this hash (its ``weights_sha256`` tag), or None."""
    if not weights_sha256:
        return None
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and tags.weights_sha256 = '{weights_sha256}'")
    except MlflowException:
        return None  # no such registered model yet
    return min(found, key=lambda mv: int(mv.version)) if found else None


def current_champion(client: Any, name: str) -> ModelRef | None:
    """The version holding the ``champion`` alias, or None (no model or no alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return ModelRef(name=name, version=str(mv.version), requested=f"models:/{name}@{CHAMPION}", run_id=mv.run_id)


def lock_path(name: str, uri: str) -> Path:
    """Where the promotion lock of model ``name`` in the store ``uri`` lives.

    For a SQLite store, in ``mlruns/.locks/`` beside the database (every process using that
    file sees it; in a project that folder is ignored, not a new file in the repository
    root); in the temporary directory for a server, keyed by the server's address
    (without credentials) and the model name.
    """
    from gan.tracking import redact

    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        return db.parent / "mlruns" / ".locks" / f"{db.name}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.promote.lock"
    key = hashlib.sha256(f"{redact(uri)}\n{name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "gan-registry-locks" / f"{key}.lock"


@contextlib.contextmanager
def promotion_lock(name: str, uri: str | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on promoting model ``name`` (one register at a time per store).

    MLflow has no compare-and-set for aliases: two registers that read the champion,
    score and then set ``champion`` at the same time would both promote against the
    same old champion and the last writer would win. Reading the champion, deciding
    and setting the aliases under this lock makes concurrent registers on one machine
    (or sharing the SQLite file) take turns. ``flock`` is released by the kernel when
    the holder dies, so a killed register never leaves the lock held.
    """
    import fcntl

    from gan.tracking import tracking_uri

    path = lock_path(name, uri or tracking_uri())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def check_schema(client: Any, name: str, spec: Mapping[str, Any], generator_dir: str | Path, allow: bool) -> tuple[str, Any] | None:
    """Refuse a generator whose output schema differs from ``name``'s champion; return ``(version, loaded champion)``.

    Every downstream job loading ``models:/<name>@champion`` expects one kind of image:
    a model trained on another data set must get its own name, not silently take over.
    """
    champion = current_champion(client, name)
    if champion is None:
        return None
    model = load_model(champion)
    change = schema_change(model.spec, spec)
    if change and not allow:
        raise GanError(
            f"{generator_dir} makes different output than {name}@champion v{champion.version} ({change}), and jobs loading "
            f"models:/{name}@champion expect the champion's; set register.model_name to a new name for this data, "
            f"or register.allow_schema_change: true to replace it on purpose."
        )
    return champion.version, model


def duplicate_decision(client: Any, name: str, metric: str, min_improvement: float, same: Any) -> Decision:
    """The decision when the weights are already registered as version ``same``: no new version, no alias moved."""
    champion = current_champion(client, name)
    recorded = same.tags.get("decision/challenger_score", "")
    try:
        score = float(recorded)
    except ValueError:
        score = math.nan
    return Decision(
        promoted=False,
        reason=f"weights identical to v{same.version} (weights_sha256 {str(same.tags.get('weights_sha256'))[:12]}); no new version registered",
        metric=metric,
        challenger_version=str(same.version),
        challenger_score=score,
        champion_version=champion.version if champion else None,
        champion_score=None,
        min_improvement=min_improvement,
        duplicate_of=str(same.version),
    )


def apply_decision(client: Any, name: str, decision: Decision) -> None:
    """Set ``challenger`` (always) and ``champion`` (when promoted); record the decision as version tags."""
    version = decision.challenger_version
    client.set_registered_model_alias(name, CHALLENGER, version)
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(name, version, key, value)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)


def decision_tags(decision: Decision) -> dict[str, str]:
    """The few model-version tags describing the decision; the whole of it is the register run's decision.json."""
    return {
        "decision": "champion" if decision.promoted else "challenger",
        "decision/reason": decision.reason,  # names the metric, both scores and the champion version
        "decision/challenger_score": repr(decision.challenger_score),
    }


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
    """
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    from gan.export import read_spec
    from gan.mlflow_model import GENERATOR_ARTIFACT, input_example, model_signature
    from gan.tracking import ensure_experiment

    spec = read_spec(generator_dir)
    # not MLflow's "Default" experiment: its artifacts would land in ./mlruns of the caller
    experiment_id = experiment_id or ensure_experiment(EXPERIMENT)
    extra = {k: str(v) for k, v in (artifacts or {}).items()}
    str_params = {k: _param_value(v) for k, v in params.items()}
    with tempfile.TemporaryDirectory(prefix="gan-model-code-") as tmp, mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
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
                signature=model_signature(int(spec["channels"]), int(spec["image_size"])),
                input_example=input_example(int(spec["num_classes"])),
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
    client.update_model_version(model_name, version, description=description or f"{spec['arch']} generator from run {run_id}")
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
    allow_schema_change: bool = False,
    log_options: Mapping[str, Any] | None = None,
) -> tuple[Decision, Any]:
    """Register a new version, score it and the current champion with ``score``, apply the decision.

    Returns the decision and the new ModelVersion.

    ``score(model)`` evaluates a loaded GeneratorModel on the current validation data and
    returns ``metric`` (lower is better); it is called on the new version and on the
    champion, both loaded back from the registry, so both are scored the same way now.

    Before anything is registered: weights identical to a registered version's (by
    ``weights_sha256``) add no version (the decision names that version, aliases stay);
    a generator whose output schema differs from the champion's is refused unless
    ``allow_schema_change`` (``register.allow_schema_change``). ``log_options`` are passed
    on to :func:`log_generator` (``run_tags``, ``run_json``, ``description``).
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
    version = log_generator(
        generator_dir, model_name, params=params, metrics=metrics, tags={**tags, "weights_sha256": str(spec.get("weights_sha256", ""))},
        version_tags=version_tags, artifacts=artifacts, experiment_id=experiment_id, **(log_options or {}),
    )  # fmt: skip
    challenger = ModelRef(name=model_name, version=str(version.version), requested=f"models:/{model_name}/{version.version}", run_id=version.run_id)
    # the register run spans the scoring and the decision too: its end time and status are theirs
    try:
        challenger_score = float(score(load_model(challenger)))
        # The champion is read, scored and replaced under the lock: a register running at the
        # same time either finished before (we compare with its result) or waits for us.
        with promotion_lock(model_name):
            champion = current_champion(client, model_name)
            champion_score, unusable = None, None
            if champion is not None:
                model = champion_model[1] if champion_model and champion_model[0] == champion.version else load_model(champion)
                unusable = incompatibility(model.spec, manifest)
                champion_score = None if unusable else float(score(model))
            decision = decide(metric, challenger.version, challenger_score, champion.version if champion else None, champion_score, min_improvement, unusable)
            apply_decision(client, model_name, decision)
    except BaseException:
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            client.set_terminated(version.run_id, "FAILED")
        raise
    client.log_dict(version.run_id, decision.as_dict(), "decision.json")
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints the run's URL again; the run already said it
        client.set_terminated(version.run_id, "FINISHED")
    return decision, version
