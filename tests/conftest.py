"""Shared fixtures: one local Ray cluster per test session, isolated MLflow stores, tiny data.

Ray's start-up is the dominant fixed cost here, so every test that needs Ray
uses the session-scoped ``ray_cluster`` fixture instead of starting its own.
"""

from __future__ import annotations

import os
import tempfile
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

# No test writes into the project's own MLflow store (ROOT/mlflow.db, ROOT/mlruns), nor
# into a server a developer's MLFLOW_TRACKING_URI points at: a test that names no store
# of its own (in process, in a stage subprocess, in a Ray worker started from here) gets
# this throw-away one. tests/test_isolation.py checks the project's store after the suite.
SESSION_STORE = Path(tempfile.mkdtemp(prefix="gan-tests-mlflow-"))
SESSION_TRACKING_URI = f"sqlite:///{SESSION_STORE / 'mlflow.db'}"
os.environ["MLFLOW_TRACKING_URI"] = SESSION_TRACKING_URI
os.environ.pop("MLFLOW_REGISTRY_URI", None)
PROJECT_STORE = ("mlflow.db", "mlruns", "mlartifacts")


def store_state(root: Path = ROOT) -> dict[str, tuple[int, int]]:
    """Every file of the MLflow store under ``root`` (``mlflow.db``, ``mlruns/``, ...) -> (size, mtime_ns); promotion locks too."""
    paths = [root / name for name in PROJECT_STORE] + sorted(root.glob(".mlflow.db.*.lock"))
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []) if f.is_file()]
    return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns) for f in files}


PROJECT_STORE_AT_START = store_state()


def pytest_collection_modifyitems(config, items):
    """The check that the suite left the project's MLflow store alone runs last."""
    last = [item for item in items if item.nodeid.startswith("tests/test_isolation.py::test_suite_left")]
    items[:] = [item for item in items if item not in last] + last


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by the whole session (4 logical CPUs on 2 cores)."""
    import ray

    if not ray.is_initialized():
        # "local": never join another process's `ray start` / ray.cluster_utils cluster
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
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


@pytest.fixture(scope="session")
def prepared_digit_domains(tmp_path_factory) -> Path:
    """The embedded translate default at 8x8: digits (A) and dilated, inverted digits (B), disjoint halves."""
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "domains8"
    prepare_dataset(PrepareConfig(source="digits_domains", image_size=8), out)
    return out


@pytest.fixture(scope="session")
def prepared_digit_domains3(tmp_path_factory) -> Path:
    """StarGAN's default at 8x8: plain, inverted and dilated digits, disjoint thirds."""
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "domains8x3"
    prepare_dataset(PrepareConfig(source="digits_domains", image_size=8, domains=["plain", "inverted", "dilated"]), out)
    return out


@pytest.fixture(scope="session")
def prepared_anomaly_digits(tmp_path_factory) -> Path:
    """Digits at 8x8 with "0" as the anomaly (the detect task's layout: normal-only train/val, test with both)."""
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "digits8-anomaly0"
    prepare_dataset(PrepareConfig(image_size=8, anomaly_classes=["0"]), out)
    return out


@pytest.fixture(autouse=True)
def _mlflow_process_uris_reset():
    """After every test, this process's MLflow URIs are the session's again.

    An in-process ``gan.tracking.configure()`` sets MLflow's process-wide tracking and
    registry URIs, and ``mlflow.set_registry_uri`` also exports ``MLFLOW_REGISTRY_URI``
    (which ``set_registry_uri(None)`` leaves behind). A set registry URI beats even the
    tracking URI handed to a later ``MlflowClient(uri)``: a later test would read another
    test's registry.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    import sys

    if "mlflow" in sys.modules:  # first: set_tracking_uri(None) also unsets the variable
        mlflow = sys.modules["mlflow"]
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture()
def mlflow_sqlite(tmp_path, monkeypatch) -> str:
    """Point MLflow at a fresh SQLite store for one test (the environment and this process's client).

    ``mlflow.set_tracking_uri``/``set_registry_uri`` as well as the variable: an earlier
    test's in-process ``gan.tracking.configure()`` would otherwise win over the variable.
    """
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


TINY_PARAMS = {
    "prepare": {"image_size": 8},
    "model": {"arch": "dcgan", "z_dim": 16, "g_width": 16, "d_width": 16, "conditional": True, "loss": "hinge"},
    "featurize": {"epochs": 2, "width": 16, "feature_dim": 32},
    "train": {"batch_size": 32, "steps": 40, "checkpoint_every": 20, "sample_every": 20, "log_every": 10,
              "eval_every": 0, "eval_samples": 200, "divergence_patience": 20},
    "evaluate": {"num_samples": 300, "kid_subset_size": 100},
    "register": {"eval_samples": 300},
}


def write_params(path: Path, **sections) -> Path:
    """A params.yaml with the tiny test config, each section updated by ``sections``."""
    import copy

    import yaml

    raw = copy.deepcopy(TINY_PARAMS)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def featurized_digits(prepared_digits, tmp_path_factory) -> Path:
    """A feature network trained (2 epochs) on ``prepared_digits``; returns models/features."""
    from gan.stages import featurize

    root = tmp_path_factory.mktemp("features")
    params = write_params(root / "params.yaml")
    featurize.main(["--params", str(params), "--data", str(prepared_digits), "--out", str(root / "features"),
                    "--metrics", str(root / "metrics.json")])
    return root / "features"


@pytest.fixture(scope="session")
def captioned_digits(tmp_path_factory) -> tuple[Path, Path]:
    """The digits at 16x16 with attribute captions, and the featurize stage's output for them
    (feature classifier and caption encoder, a few epochs): ``(prepared, features)``."""
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset
    from gan.stages import featurize

    root = tmp_path_factory.mktemp("captioned")
    prepare_dataset(PrepareConfig(image_size=16, captions={"source": "attributes"}), root / "prepared")
    params = write_params(root / "params.yaml", featurize={"epochs": 1, "text": {"epochs": 3}})
    featurize.main(["--params", str(params), "--data", str(root / "prepared"), "--out", str(root / "features"),
                    "--metrics", str(root / "metrics.json")])
    return root / "prepared", root / "features"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """This project as a git + DVC repo with tiny params after one full ``gan repro`` (about a minute).

    Returns ``(repo, output of that repro)``: ``dvc repro``'s on one local Ray shared by the
    stages. Shared by tests/test_pipeline_dvc.py, tests/test_retrain.py and
    tests/test_ray_session.py; a test that changes the repo leaves it reproduced (up to date).
    """
    from .pipeline_repo import BIN, git, make_pipeline_repo, run

    repo = make_pipeline_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    proc = run(repo, str(BIN / "gan"), "repro")
    out = proc.stdout + proc.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first repro")
    return repo, out
