"""Inference per task: what an exported model does at inference time, without training code.

    from gan.inference import runner_for
    runner = runner_for("models/generator")     # the task's Runner for that export (spec["task"])
    runner.predict(table)                        # what the MLflow pyfunc and `mlflow models serve` answer

``gan/inference/<task>.py`` holds one task's inference contract: ``Runner(model_dir)``
(``.spec``, ``.predict(model_input)`` and the task's own streaming API), ``signature(spec)``
and ``input_example(spec)`` for MLflow. These modules travel with every registered model
version, so they import only :mod:`gan.export`, :mod:`gan.sampling`, :mod:`gan.models`
and :mod:`gan.errors` (:func:`gan.registry.model_code_files` refuses anything else).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from gan.errors import GanError
from gan.export import read_spec


def inference_module(task: str) -> ModuleType:
    """``gan.inference.<task>``; GanError for a task this version of the code does not know."""
    try:
        return importlib.import_module(f"gan.inference.{task}")
    except ModuleNotFoundError:
        raise GanError(f"the model's task {task!r} has no inference module here (gan/inference/{task}.py); use a newer version of the code.") from None


def inference_name(spec: dict[str, Any]) -> str:
    """The inference module an exported spec asks for (``inference``, else its ``task``)."""
    return str(spec.get("inference") or spec["task"])


def runner_for(model_dir: str) -> Any:
    """The task's Runner over the exported model in ``model_dir``."""
    return inference_module(inference_name(read_spec(model_dir))).Runner(model_dir)
