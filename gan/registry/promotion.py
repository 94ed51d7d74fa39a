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

from gan.registry.uris import ModelRef

CHALLENGER = "challenger"
CHAMPION = "champion"

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
    refused: str | None = None,
) -> Decision:
    """Promote the first version, a challenger whose champion cannot be evaluated, or one that beats it.

    ``refused`` (a sentence: the privacy audit's excess) keeps the challenger from
    promotion whatever its score.
    """
    common = dict(metric=metric, challenger_version=challenger_version, challenger_score=challenger_score, champion_version=champion_version, champion_score=champion_score, min_improvement=min_improvement)
    if not math.isfinite(challenger_score):
        return Decision(False, f"challenger {metric} = {challenger_score} is not finite", **common)
    if refused:
        return Decision(False, refused, **common)
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

    Beside the database for a SQLite store (every process using that file sees it);
    in the temporary directory for a server, keyed by the server's address (without
    credentials) and the model name.
    """
    from gan.tracking import redact

    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        return db.parent / f".{db.name}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.promote.lock"
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


def apply_decision(client: Any, name: str, decision: Decision) -> None:
    """Set ``challenger`` (always) and ``champion`` (when promoted); record the decision as version tags."""
    version = decision.challenger_version
    client.set_registered_model_alias(name, CHALLENGER, version)
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(name, version, key, value)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)


def decision_tags(decision: Decision) -> dict[str, str]:
    """Model-version tags describing the decision (tags are strings; None becomes '')."""
    return {
        "decision": "champion" if decision.promoted else "challenger",
        "decision/reason": decision.reason,
        "decision/metric": decision.metric,
        "decision/challenger_score": repr(decision.challenger_score),
        "decision/champion_score": "" if decision.champion_score is None else repr(decision.champion_score),
        "decision/champion_version": decision.champion_version or "",
        "decision/min_improvement": repr(decision.min_improvement),
    }
