"""Gated promotion: the challenger/champion decision, applied under a lock.

    decision = decide("fid", "3", 1.2, "2", 1.5, min_improvement=0.0, unusable=None)
    with promotion_lock("digits-gan"):
        apply_decision(client, "digits-gan", decision)

A new version always gets the alias ``challenger``. It gets ``champion`` only when its
score (lower is better: FID or KID) beats the current champion's by ``min_improvement``
(relative), both measured now by the same evaluation on the current validation data;
the first version becomes champion.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gan.errors import GanError
from gan.registry.uris import ModelRef, load_model

CHALLENGER = "challenger"
CHAMPION = "champion"

# ---------------------------------------------------------------- gated promotion


@dataclass(frozen=True)
class Decision:
    """The outcome of comparing a challenger with the current champion (better: lower, or higher for AUROC/PSNR/accuracies)."""

    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    min_improvement: float
    lower_is_better: bool = True
    # the version whose weights are byte-identical to the challenger's: nothing new was registered
    duplicate_of: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold(champion_score: float, min_improvement: float, lower_is_better: bool = True) -> float:
    """The score a challenger must beat: ``champion * (1 -/+ min_improvement)``, sign-safe for KID < 0."""
    step = min_improvement * abs(champion_score)
    return champion_score - step if lower_is_better else champion_score + step


def decide(
    metric: str,
    challenger_version: str,
    challenger_score: float,
    champion_version: str | None,
    champion_score: float | None,
    min_improvement: float,
    champion_unusable: str | None = None,
    lower_is_better: bool = True,
    refused: str | None = None,
) -> Decision:
    """Promote the first version, a challenger whose champion cannot be evaluated, or one that beats it.

    For a metric where higher is better (``lower_is_better=False``: an accuracy) the
    challenger must exceed ``champion + min_improvement * |champion|``. ``refused`` (a
    sentence: the privacy audit's excess) keeps the challenger from promotion whatever its score.
    """
    common = dict(metric=metric, challenger_version=challenger_version, challenger_score=challenger_score, champion_version=champion_version,
                  champion_score=champion_score, min_improvement=min_improvement, lower_is_better=lower_is_better)  # fmt: skip
    if not math.isfinite(challenger_score):
        return Decision(False, f"challenger {metric} = {challenger_score} is not finite", **common)
    if refused:
        return Decision(False, refused, **common)
    if champion_version is None:
        return Decision(True, "first version: no champion yet", **common)
    if champion_unusable:
        return Decision(True, f"champion v{champion_version} cannot be evaluated on the current data ({champion_unusable})", **common)
    assert champion_score is not None
    bar = threshold(champion_score, min_improvement, lower_is_better)
    beats = challenger_score < bar if lower_is_better else challenger_score > bar
    if beats or not math.isfinite(champion_score):
        return Decision(True, f"{metric} {challenger_score:.6g} {'<' if lower_is_better else '>'} {bar:.6g} (champion v{champion_version} {champion_score:.6g}, min_improvement {min_improvement})", **common)
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
