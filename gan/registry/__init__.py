"""MLflow Model Registry: log the exported generator as a model version, aliases, gated promotion.

    python pipelines/register.py            # what `dvc repro register` runs (gan/stages/register.py)

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
# The registry in four modules: code stored with a version (code), model URIs (uris),
# the gated promotion (promotion) and logging a version / the whole register step (versions).

from gan.registry.code import (
    GAN_SRC,
    MODEL_ARTIFACT_NAME,
    MODEL_CODE_ENTRIES,
    MODEL_FILE,
    TRAINING_SIDE,
    gan_imports,
    model_code_files,
    module_path,
    runtime_nodes,
    stage_model_code,
)
from gan.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    Decision,
    apply_decision,
    current_champion,
    decide,
    decision_tags,
    incompatibility,
    lock_path,
    promotion_lock,
    threshold,
)
from gan.registry.uris import ModelRef, aliases, load_model, parse_model_uri, resolve_model
from gan.registry.versions import (
    EXPERIMENT,
    flatten,
    log_generator,
    numeric_metrics,
    pip_requirements,
    register_generator,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "EXPERIMENT", "GAN_SRC", "MODEL_ARTIFACT_NAME", "MODEL_CODE_ENTRIES", "MODEL_FILE", "TRAINING_SIDE",
    "Decision", "ModelRef", "aliases", "apply_decision", "current_champion", "decide", "decision_tags", "flatten",
    "gan_imports", "incompatibility", "load_model", "lock_path", "log_generator", "model_code_files", "module_path",
    "numeric_metrics", "parse_model_uri", "pip_requirements", "promotion_lock", "register_generator", "resolve_model",
    "runtime_nodes", "stage_model_code", "threshold",
]  # fmt: skip
