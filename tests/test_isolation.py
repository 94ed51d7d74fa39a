"""The test suite keeps out of the project's own MLflow store (``mlflow.db``, ``mlruns/``).

    pytest tests/test_isolation.py

tests/conftest.py points every test that names no store of its own at a throw-away
one and records the project's store when the session starts;
``test_suite_left_the_projects_mlflow_store_untouched`` runs last (conftest moves it
there) and compares.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import PROJECT_STORE_AT_START, ROOT, SESSION_TRACKING_URI, store_state
from .reliability.conftest import child_env


def test_stage_subprocesses_and_this_process_default_to_the_throw_away_store():
    from gan.tracking import tracking_uri

    code = "from gan.tracking import tracking_uri; print(tracking_uri())"
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert tracking_uri() == child.stdout.strip() == SESSION_TRACKING_URI
    assert str(ROOT / "mlflow.db") not in SESSION_TRACKING_URI


def test_a_sqlite_stores_artifacts_live_beside_it_whatever_the_working_directory(tmp_path, monkeypatch):
    """MLflow's default would be ./mlruns of the caller: from the project root, the project's mlruns/."""
    import mlflow

    from gan.tracking import ensure_experiment

    monkeypatch.chdir(ROOT)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        experiment = mlflow.MlflowClient(uri).get_experiment(ensure_experiment("isolation"))
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert experiment.artifact_location == (tmp_path / "mlruns" / "isolation").as_uri()


def test_suite_left_the_projects_mlflow_store_untouched():
    """Runs last: no file of ROOT/mlflow.db, ROOT/mlruns, ROOT/mlartifacts was created, changed or removed."""
    now = store_state()
    changed = sorted(name for name in set(now) | set(PROJECT_STORE_AT_START) if now.get(name) != PROJECT_STORE_AT_START.get(name))
    assert not changed, f"tests wrote into the project's MLflow store: {changed[:10]}"


def test_store_state_sees_a_new_run_folder(tmp_path: Path):
    """The check above can fail: a file appearing under mlruns/ is a change."""
    before = store_state(tmp_path)
    (tmp_path / "mlruns" / "1").mkdir(parents=True)
    (tmp_path / "mlruns" / "1" / "meta.yaml").write_text("x")
    assert store_state(tmp_path) != before

