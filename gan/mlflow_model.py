"""A registered model as an MLflow pyfunc, logged as code (models-from-code), for every task.

    model = mlflow.pyfunc.load_model("models:/digits-gan@champion")
    out = model.predict(pd.DataFrame([{"n": 8, "labels": [3], "seed": 0}]))   # a generate model
    out["images"]   # uint8 [8, C, H, W] (0..255; 127.5 * (x + 1) of G's [-1, 1] output)
    out["labels"]   # int64 [8] (-1 for an unconditional generator)

    mlflow models serve -m models:/digits-gan@champion --env-manager local
    curl -d '{"dataframe_records": [{"n": 4, "seed": 0}]}' -H 'Content-Type: application/json' \\
        127.0.0.1:5000/invocations

What a request holds and what comes back is the task's inference contract: the exported
``config.json`` names the task, and :class:`TaskModel` hands every call to that task's
``Runner`` in ``gan/inference/<task>.py`` (requests of the generate task are described in
:mod:`gan.inference.generate`). Attributes of the runner (``spec``, ``class_names``,
``iter_batches`` ...) are reachable on the model itself.

Why models-from-code with the model-definition modules as code_paths
--------------------------------------------------------------------
* No pickle on the loading path: MLflow executes this file at load time instead of
  unpickling a Python object, and the networks' weights are the exported
  ``model.safetensors`` (tensors only) read by :func:`gan.export.load_networks`.
  Loading works with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.
* One definition of each network: :func:`gan.registry.model_code_files` logs, next to
  this file, exactly the modules needed at inference (``gan/models``, ``gan/inference``,
  ``gan/export.py``, ``gan/sampling.py`` and what they import inside ``gan``, found by
  reading their imports) and refuses anything from the training side (``gan.training``,
  ``gan.tasks``, ``gan.data``, ``gan.losses``, ...). MLflow puts that copy first on
  ``sys.path`` when it loads the model, so a version keeps loading after the project's
  code changes, and where the project is not installed (only torch, safetensors, numpy,
  pandas and mlflow are needed).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from gan.inference import runner_for

# The artifact key under which the exported model directory is logged.
GENERATOR_ARTIFACT = "generator"


class TaskModel(PythonModel):
    """pyfunc wrapper around an exported model: every call goes to its task's Runner."""

    def load_context(self, context: PythonModelContext) -> None:
        self.runner = runner_for(context.artifacts[GENERATOR_ARTIFACT])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return self.runner.predict(model_input)

    def __getattr__(self, name: str) -> Any:
        # only reached for names TaskModel lacks: the task's own API (spec, iter_batches, ...)
        if name == "runner":
            raise AttributeError(name)
        return getattr(self.runner, name)


mlflow.models.set_model(TaskModel())
