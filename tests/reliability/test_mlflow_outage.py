"""The MLflow server goes away during training and comes back: nothing is lost.

One real `mlflow server` on 127.0.0.1, reached through a URI carrying user:password@ and
with a token in MLFLOW_TRACKING_TOKEN, so the same run also checks that credentials never
reach the console, the logged params and tags, or the stage outputs.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import write_params
from ..test_registry import free_port, stop, tracking, venv_env, wait_healthy
from ..test_train_ray import history_steps, registered_checkpoints, stage_args, tiny_raw
from .conftest import STAGES, assert_one_line_error, child_env, run_stage, tree
from .test_faults import wait_for
from .test_security import SECRET

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def server_on(root: Path, port: int) -> Iterator[subprocess.Popen]:
    """A real tracking + registry server on ``port`` over the store in ``root`` (kept between starts)."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"server-{port}.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}", "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                                cwd=root, start_new_session=True)  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=180, log=log)
        yield proc
    finally:
        stop(proc)


def no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and "alice:" not in text


def test_server_down_during_training_loses_nothing(ray_cluster, prepared_digits, featurized_digits, tmp_path, capsys, ray_default_poll):
    import mlflow

    from gan.stages import evaluate, register
    from gan.stages import train as train_stage

    port, store = free_port(), tmp_path / "server"
    uri = f"http://alice:{SECRET}@127.0.0.1:{port}"
    secrets = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_TOKEN": SECRET}
    args = stage_args(tmp_path, prepared_digits, tiny_raw(tmp_path, steps=60, checkpoint_every=10, log_every=10, sample_every=30))
    address = ray_cluster.get_runtime_context().gcs_address
    with server_on(store, port) as server:
        proc = subprocess.Popen([sys.executable, str(STAGES / "train.py"), *args], env=child_env(RAY_ADDRESS=address, **secrets),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
        wait_for(lambda: registered_checkpoints(tmp_path / "ray_storage"), "checkpoint", proc, poll=0.1)
        stop(server)  # mid-training
        assert server.returncode is not None
    out, err = proc.communicate(timeout=300)
    first = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_one_line_error(first, "training finished (60 steps; outputs in", f"MLflow at http://***@127.0.0.1:{port} is not reachable", "re-run the stage", ray_logs=True)
    no_secret(out, err)
    # the training's results are on disk: metrics, every history row, the generator
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["steps"] == 60 and history_steps(tmp_path / "train" / "history.csv") == list(range(10, 61, 10))
    assert json.loads((tmp_path / "generator" / "config.json").read_text())["mlflow_run_id"] is None

    # registration fails clearly while the server is down, and writes nothing
    params = write_params(tmp_path / "register.yaml", register={"model_name": "outage-gan"})
    assert evaluate.main(["--params", str(params), "--data", str(prepared_digits), "--model", str(tmp_path / "generator"),
                          "--features", str(featurized_digits), "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    reg_args = ["--params", str(params), "--data", str(prepared_digits), "--model", str(tmp_path / "generator"), "--features",
                str(featurized_digits), "--eval", str(tmp_path / "eval"), "--out", str(tmp_path / "registry" / "decision.json")]  # fmt: skip
    down = run_stage("register", *reg_args, **secrets)
    assert_one_line_error(down, f"http://***@127.0.0.1:{port} is not reachable")
    no_secret(down.stdout, down.stderr)
    assert not (tmp_path / "registry").exists()

    # the server is back (same store, same port): re-running both stages logs everything
    before = tree(tmp_path / "train")
    with server_on(store, port), pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        for key, value in secrets.items():
            mp.setenv(key, value)
        assert train_stage.main(args) == 0  # nothing left to train: the run is logged from its final checkpoint
        assert register.main(reg_args) == 0
        stdout = capsys.readouterr()
        no_secret(stdout.out, stdout.err)
        with tracking(f"http://127.0.0.1:{port}"):
            client = mlflow.MlflowClient()
            [run] = client.search_runs([client.get_experiment_by_name("gan-train").experiment_id])
            assert run.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/D")] == list(range(10, 61, 10))
            assert run.data.metrics["final.steps"] == 60
            version = client.get_model_version("outage-gan", "1")
            reg_run = client.get_run(version.run_id)
            for mapping in (run.data.params, run.data.tags, version.tags, reg_run.data.params, reg_run.data.tags):
                no_secret(json.dumps(mapping))
    assert json.loads((tmp_path / "generator" / "config.json").read_text())["mlflow_run_id"] == run.info.run_id
    after = tree(tmp_path / "train")
    assert json.loads(after["metrics.json"])["steps"] == 60 and after["history.csv"] == before["history.csv"]
    decision = json.loads((tmp_path / "registry" / "decision.json").read_text())
    assert decision["tracking_uri"] == f"http://***@127.0.0.1:{port}" and decision["promoted"]
    no_secret(*(p.read_text(errors="ignore") for p in tmp_path.rglob("*.json")))

