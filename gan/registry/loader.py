"""The model loader of every downstream command: a registry URI or an exported model folder, of one task.

    runner, loaded = load_runner("models:/digits-detect@champion", "detect")   # gan score
    runner, loaded = load_runner("models/generator", "translate")             # an export on disk

Kept apart from :mod:`gan.registry.uris` so that what only reads the registry (the
augment_eval stage, through ``load_registered``) does not import the inference modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gan.errors import GanError
from gan.registry.uris import load_registered


def load_runner(model: str, task: str) -> tuple[Any, str]:
    """``(runner, what was loaded)``: the ``task`` model of a registry URI or of an exported model folder.

    The loader of every downstream command (``gan translate``, ``gan upscale``, ``gan score``;
    ``gan augment`` through :func:`gan.registry.uris.load_registered`): the same URIs accepted, the same store,
    the same sentences for a bad one, and a model of another task refused by name.
    """
    if ":/" in model:  # a URI: only registry ones load (runs:/ and others get parse_model_uri's sentence)
        ref, loaded_model = load_registered(model)
        runner, loaded = loaded_model.runner, f"{ref.name} v{ref.version}"
    elif Path(model).is_dir():
        from gan.inference import runner_for

        runner, loaded = runner_for(model), model
    else:
        raise GanError(f"--model {model} is neither a models:/ URI nor an exported model folder; pass models:/NAME@champion or models/generator.")
    got = getattr(runner, "spec", {}).get("task")
    if got != task:
        raise GanError(f"{model} is a '{got}' model, not a {task} model; pass a model trained with model.task: {task}.")
    return runner, loaded
