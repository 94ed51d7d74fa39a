"""One MLflow run per training, logged from the driver once training has finished.

The run's start time is the stage's start, so MLflow shows the real duration; a
training that fails leaves a FAILED run with the error (:func:`log_failed_run`).

Logging from the driver (not from the workers) means a worker on another node needs
no access to the tracking store, and an interrupted-then-resumed training still
gives exactly one run. Metrics are logged with their training step, so MLflow's
charts match train/history.csv.

Nothing is logged while training runs, so a tracking server that goes away during
training costs nothing until the end: :func:`log_training_run` then raises
:class:`TrackingUnavailable` quickly (one probe, not MLflow's minutes of retries), the
stage still writes its outputs from the final checkpoint, and re-running the stage
once the server is back logs the whole run from that checkpoint without training again.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from gan.errors import GanError
from gan.training.checkpoint import TrainCheckpoint, history_csv

EXPERIMENT = "gan-train"
BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


class TrackingUnavailable(GanError):
    """The tracking store could not be reached when the finished run was to be logged."""

    def __init__(self, uri: str, detail: str) -> None:
        self.uri, self.detail = uri, detail
        super().__init__(f"MLflow tracking server {uri} is not reachable ({detail}); start it or fix MLFLOW_TRACKING_URI.")


def flatten(prefix: str, obj: Any) -> dict[str, Any]:
    """``{"train": {"lr_G": 1}}`` -> ``{"train.lr_G": 1}``."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: obj}


def log_failed_run(run_name: str, tags: dict[str, str], error: str, start_ms: int) -> str | None:
    """A FAILED run in ``gan-train`` spanning the failed attempt, with the error; None when MLflow is unreachable.

    Best effort and quick (one probe first): the stage's own error is what the user must see.
    """
    import mlflow

    from gan.tracking import configure, ensure_experiment

    uri = configure()
    if not _reachable(uri):
        return None
    try:
        client = mlflow.MlflowClient()
        run = client.create_run(ensure_experiment(EXPERIMENT), start_time=start_ms, run_name=run_name, tags={**tags, "error": error[:5000]})
        client.set_terminated(run.info.run_id, "FAILED")
        return run.info.run_id
    except Exception:  # never hide the training error behind a logging one
        return None


def log_training_run(
    params: dict[str, Any],
    ckpt: TrainCheckpoint,
    metrics: dict[str, Any],
    tags: dict[str, str],
    run_name: str,
    start_ms: int | None = None,
) -> str:
    """Log params, per-step history, final metrics, sample grids and history.csv; return the run id.

    ``start_ms`` (epoch milliseconds) is when the stage started: the run spans the real
    work in MLflow's UI (start, end, duration), though it is written when training ends.
    """
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    from gan.tracking import check_reachable, configure, ensure_experiment, redact

    uri = configure()
    try:
        check_reachable(uri)
        experiment_id = ensure_experiment(EXPERIMENT)
        client = mlflow.MlflowClient()
        existing = finished_run(client, experiment_id, run_name, ckpt.step)
        if existing is not None:  # the stage re-exported a finished training: same run, no duplicate
            return existing
        run = client.create_run(experiment_id, start_time=start_ms, run_name=run_name, tags={**tags, "ray_run": run_name})
    except Exception as err:  # GanError from the probe, MlflowException after MLflow's own retries
        if isinstance(err, GanError) or not _reachable(uri):
            raise TrackingUnavailable(redact(uri), _why(err)) from None
        raise
    run_id = run.info.run_id
    try:
        flat = {k: str(v)[:6000] for k, v in flatten("", params).items()}
        client.log_batch(run_id, params=[Param(k, v) for k, v in flat.items()], tags=[RunTag("mlflow.runName", run_name)])
        now = int(time.time() * 1000)
        rows = [
            Metric(_key(k), float(v), now, int(row["step"]))
            for row in ckpt.history
            for k, v in row.items()
            if k != "step" and isinstance(v, int | float)
        ]
        rows += [Metric(_key(k), float(v), now, ckpt.step) for k, v in flatten("final", metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)]
        for i in range(0, len(rows), BATCH):
            client.log_batch(run_id, metrics=rows[i : i + BATCH])
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in ckpt.samples.items():
                (Path(tmp) / name).write_bytes(data)
            client.log_artifacts(run_id, tmp, artifact_path="samples")
        client.log_text(run_id, history_csv(ckpt.history), "history.csv")
        client.set_terminated(run_id, "FINISHED")
    except Exception as err:
        if not _reachable(uri):
            # the server went away while logging: marking the run FAILED would only wait on
            # MLflow's retries again; the re-run logs a new, complete run
            raise TrackingUnavailable(redact(uri), _why(err)) from None
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def _reachable(uri: str) -> bool:
    """One quick probe of the tracking store (no MLflow retries)."""
    from gan.tracking import check_reachable

    try:
        check_reachable(uri, timeout=2.0)
    except GanError:
        return False
    return True


def _why(err: Exception) -> str:
    """A short reason: the probe's own words, else the exception type."""
    if isinstance(err, GanError):
        text = str(err)
        return text[text.find("(") + 1 : text.find(")")] if "(" in text else type(err).__name__
    return type(err).__name__


def finished_run(client: Any, experiment_id: str, run_name: str, step: int) -> str | None:
    """The id of a finished MLflow run of Ray run ``run_name`` that logged ``step`` steps."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.ray_run = '{run_name}' and attributes.status = 'FINISHED'",
        max_results=10,
    )
    for run in runs:
        if run.data.metrics.get("final.steps") == step:
            return run.info.run_id
    return None


def _key(name: str) -> str:
    """A task's metric name as MLflow takes it (alphanumerics and ``_-. :/``): ``D(G(z))`` -> ``D_G_z``.

    Any other character (a comma, a bracket, ``|``) becomes ``_``: tasks name their metrics
    freely, and a name MLflow refuses would fail the run's logging after training.
    """
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name.replace("(", "_").replace(")", "")).rstrip("_")
