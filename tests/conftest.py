"""Shared fixtures: one local Ray cluster per test session, isolated MLflow stores, tiny data.

Ray's start-up is the dominant fixed cost here, so every test that needs Ray
uses the session-scoped ``ray_cluster`` fixture instead of starting its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by the whole session (4 logical CPUs on 2 cores)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory) -> Path:
    """The default digits data set prepared at 8x8 once per session (train/val shards)."""
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "digits8"
    prepare_dataset(PrepareConfig(image_size=8), out)
    return out


@pytest.fixture()
def mlflow_sqlite(tmp_path, monkeypatch) -> str:
    """Point MLflow at a fresh SQLite store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
