"""What a training run is: the effective hyper-parameters and the run's stable name.

    params, tuned = apply_tuned(params, "tune/best.json")   # only when tune.enabled and the file exists
    name = run_name(params, data_hash=manifest["hash"])     # "train-3f2a9c01d4", same config -> same name

The name is a hash of everything that changes the trained weights (model and train
sections, the prepared data's hash, the image geometry and the training source code),
and nothing that does not (log/sample/checkpoint intervals, storage path, failure
budget). Re-running an interrupted stage therefore finds its own checkpoints, while a
changed config or code starts a fresh run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gan.config import Params, parse_params
from gan.errors import ConfigError

# Keys tune/best.json may set in the train section (the tune stage searches these).
TUNABLE = ("lr_G", "lr_D", "beta1", "beta2", "n_critic")
# Reported in train/metrics.json as the values this run used.
REPORTED = ("lr_G", "lr_D", "beta1", "beta2", "n_critic", "batch_size", "steps")
# train.* keys that do not change the trained weights (excluded from the run name).
NOT_IN_RUN_NAME = (
    "checkpoint_every",
    "sample_every",
    "log_every",
    "eval_every",
    "eval_samples",
    "max_failures",
    "storage_path",
    "divergence_patience",
    "placement_strategy",
    "cpus_per_worker",
    "gpus_per_worker",
    "fresh",  # how to start, not what is trained: the fresh run keeps the config's name
)
# Source files whose change must start a fresh run rather than resume an old one.
CODE_GLOBS = ("training/*.py", "tasks/*.py", "models/*.py", "sampling.py", "losses.py", "ema.py", "diffaugment.py", "data/shards.py")


def with_train(params: Params, **changes: Any) -> Params:
    """``params`` with ``train.<key> = value`` for each change, validated like params.yaml."""
    raw = params.model_dump()
    raw["train"].update(changes)
    return parse_params(raw, source="train overrides")


def apply_tuned(params: Params, best_path: str | os.PathLike | None) -> tuple[Params, dict[str, Any]]:
    """Apply ``tune/best.json``'s config when ``tune.enabled`` and the file exists.

    Returns the effective params and ``{"source": ..., lr_G, lr_D, beta1, beta2, n_critic,
    batch_size, steps}`` for train/metrics.json. A value the train section cannot take
    fails with a ConfigError naming the file and key.
    """
    path = Path(best_path) if best_path else None
    source = "params.yaml"
    if params.tune.enabled and path is not None and path.exists():
        try:
            best = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ConfigError(f"{path} is not valid JSON; re-run the tune stage (dvc repro tune).") from None
        config = best.get("config") if isinstance(best, dict) else None
        if not isinstance(config, dict):
            raise ConfigError(f"{path} has no 'config' mapping; re-run the tune stage (dvc repro tune).")
        if not config or best.get("enabled") is False:  # the tune stage ran disabled: nothing to apply
            return params, {"source": "params.yaml", **{key: getattr(params.train, key) for key in REPORTED}}
        unknown = sorted(set(config) - set(TUNABLE))
        if unknown:
            raise ConfigError(f"{path}: config key '{unknown[0]}' cannot be applied to training; allowed keys: {', '.join(TUNABLE)}.")
        raw = params.model_dump()
        raw["train"].update(config)
        params = parse_params(raw, source=str(path))
        source = str(path)
    used = {key: getattr(params.train, key) for key in REPORTED}
    return params, {"source": source, **used}


def training_fingerprint(params: Params, data_hash: str, code_hash: str | None = None) -> dict[str, Any]:
    """The plain dict whose hash names the run (see the module docstring)."""
    train = {k: v for k, v in params.train.model_dump().items() if k not in NOT_IN_RUN_NAME}
    return {
        "model": params.model.model_dump(),
        "train": train,
        "data": data_hash,
        "code": code_hash if code_hash is not None else source_hash(),
    }


def run_name(params: Params, data_hash: str, code_hash: str | None = None) -> str:
    """``train-<10 hex>``: stable for one config, data set and training code."""
    blob = json.dumps(training_fingerprint(params, data_hash, code_hash), sort_keys=True, default=str)
    return "train-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def source_hash(root: str | os.PathLike | None = None) -> str:
    """sha256 over the training-relevant source files of the ``gan`` package."""
    base = Path(root) if root else Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for pattern in CODE_GLOBS:
        for path in sorted(base.glob(pattern)):
            digest.update(path.relative_to(base).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
