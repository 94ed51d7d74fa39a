"""Keep third-party console noise out of the stages' output; full logs stay in files.

    quiet_console()     # called by gan.errors.run_main before a stage imports Ray or MLflow

The user of ``dvc repro`` should see one concise line (or a few progress lines) per
stage. Ray's worker logs stay in ``/tmp/ray/session_latest/logs`` on each node and
MLflow's INFO notes (database migrations, artifact uploads) are dropped. Every value
is a default: a variable already set in the environment wins, so
``MLFLOW_LOGGING_LEVEL=INFO dvc repro`` brings MLflow's notes back.
"""

from __future__ import annotations

import logging
import os

QUIET_ENV = {
    "RAY_DEDUP_LOGS": "1",
    "RAY_TRAIN_V2_ENABLED": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no TensorBoard/CSV/JSON loggers per trial
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # read when mlflow is imported
    # Tune's advice to checkpoint less often: trials checkpoint at every evaluation on purpose
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

# loggers whose warnings are notes to Ray's developers, not to the user; raised to ERROR
NOISY_LOGGERS = (
    # "token authentication is enabled for this Ray cluster": the local default, nothing to do
    "ray._private.authentication.authentication_token_setup",
)


def quiet_console() -> None:
    """Set QUIET_ENV defaults and raise NOISY_LOGGERS to ERROR (idempotent)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
