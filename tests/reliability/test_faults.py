"""Faults survived on real Ray: a worker SIGKILLed, the tune driver SIGKILLed, a node removed.

The whole train stage SIGKILLed mid-run and re-run is
tests/test_train_ray.py::test_killed_stage_resumes_from_last_checkpoint_end_to_end, and a
worker exiting on its own (os._exit) is ...::test_two_workers_stay_in_sync_and_survive_a_killed_worker.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gan.config import parse_params

from ..conftest import write_params
from ..test_train_ray import history_steps, registered_checkpoints, stage_args, stage_env, tiny_raw
from .conftest import STAGES, assert_one_line_error, ray_processes, raylet_pid

pytestmark = pytest.mark.slow


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 300, poll: float = 0.02):
    """Poll ``condition()`` until it returns something truthy; fail when ``proc`` ended or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert proc is None or proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(poll)
    return value


def persisted_checkpoints(run_dir: Path) -> list[int]:
    """Steps of the checkpoint folders a worker has started to write into the run's storage."""
    return sorted(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*"))


def test_worker_sigkilled_mid_run_resumes_from_the_last_checkpoint(ray_cluster, prepared_digits, tmp_path, ray_default_poll):
    """SIGKILL the Ray Train worker process the moment it writes a checkpoint: Ray restarts the
    group, the new worker resumes from a checkpoint and finishes the planned steps."""
    from gan.training.ray_run import run_training

    every, steps = 10, 60
    params = parse_params(tiny_raw(tmp_path, steps=steps, checkpoint_every=every, log_every=every, sample_every=30, max_failures=1))
    name, result = "train-sigkill", {}

    def train() -> None:
        try:
            result["outcome"] = run_training(params, prepared_digits, name=name)
        except BaseException as err:  # surfaced by the assertions below
            result["error"] = err

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    raylet = raylet_pid()
    run_dir = tmp_path / "ray_storage" / name
    storage = tmp_path / "ray_storage"
    [pid] = wait_for(lambda: ray_processes(raylet, "RayTrainWorker"), "Ray Train worker process")

    def worker_waits_at_a_checkpoint() -> int | None:
        """m when the worker has written checkpoint m while Ray Train has committed m - every.

        Ray Train commits a checkpoint when its controller takes the report (at its next
        poll) and the next report waits for that, so the worker is at step m now.
        """
        written, committed = persisted_checkpoints(run_dir), registered_checkpoints(storage)
        m = max(written, default=0)
        return m if m >= 2 * every and committed and max(committed) == m - every else None

    reached = wait_for(worker_waits_at_a_checkpoint, "checkpoint pair", poll=0.01)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in result, result.get("error")

    outcome = result["outcome"]
    s = outcome.summary
    assert s["step"] == steps and outcome.checkpoint.step == steps
    assert s["start_step"] == reached - every  # resumed from the last committed checkpoint, not from step 0
    lost = reached - s["start_step"]  # steps the killed worker had done that the new one redid
    assert 0 <= lost <= every, f"lost {lost} steps (killed at step {reached}, resumed at {s['start_step']})"
    assert [int(r["step"]) for r in outcome.checkpoint.history] == list(range(every, steps + 1, every))
    assert pid not in ray_processes(raylet, "RayTrainWorker")
    print(f"\nFIGURE sigkill: killed at step {reached}, resumed at {s['start_step']}, lost {lost} (checkpoint_every {every})")


def test_tune_driver_sigkilled_mid_search_resumes_on_rerun(ray_cluster, prepared_digits, featurized_digits, tmp_path, mlflow_sqlite, capsys):
    """SIGKILL the tune stage (driver and all) after a trial checkpointed; the re-run restores
    the search (Tuner.restore) and its trials continue rather than start over."""
    from gan.stages import tune as tune_stage

    storage = tmp_path / "tune_storage"
    params = write_params(tmp_path / "params.yaml", tune={
        "num_samples": 2, "max_steps": 60, "eval_every": 20, "eval_samples": 200, "scheduler": "fifo", "cpus_per_trial": 1,
        "max_concurrent_trials": 2, "storage_path": str(storage), "lr_G": [1e-4, 1e-3], "lr_D": [1e-4, 1e-3]})  # fmt: skip
    argv = ["--params", str(params), "--data", str(prepared_digits), "--features", str(featurized_digits), "--out", str(tmp_path / "tune")]
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(STAGES / "tune.py"), *argv], env=stage_env(RAY_ADDRESS=address, MLFLOW_TRACKING_URI=mlflow_sqlite),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)  # fmt: skip
    try:
        # a trial has checkpointed and the experiment state that Tuner.restore reads is on disk
        wait_for(lambda: list(storage.glob("*/experiment_state-*.json")) and list(storage.glob("*/*/checkpoint_*")), "trial checkpoint", proc, poll=0.2)
        before = {p.parent.name for p in storage.glob("*/*/checkpoint_*")}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "tune" / "best.json").exists()

    assert tune_stage.main(argv) == 0  # the same stage again (this process is connected to Ray)
    assert ", resumed)" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "tune" / "trials.csv").open()))
    assert len(rows) == 2 and all(r["status"] == "completed" and int(r["steps"]) == 60 for r in rows)
    assert before <= {p.name for p in storage.glob("*/*") if p.is_dir()}  # the same trials, continued
    assert json.loads((tmp_path / "tune" / "best.json").read_text())["enabled"] is True


def test_node_removed_mid_run_fails_clearly_and_the_checkpoint_resumes(prepared_digits, tmp_path, monkeypatch, ray_default_poll):
    """A two-node cluster loses the node of one of two STRICT_SPREAD workers: the stage fails with
    one sentence once the group cannot be placed, the last checkpoint loads, and with a node back
    the same stage resumes from it and finishes."""
    from ray.cluster_utils import Cluster

    from gan.training.checkpoint import load_checkpoint

    # each placement attempt waits this long (Ray's default is 60 s); the raylets inherit it
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "3")
    raw = tiny_raw(tmp_path, num_workers=2, placement_strategy="STRICT_SPREAD", steps=60, checkpoint_every=10, log_every=10,
                   sample_every=30, max_failures=1)  # fmt: skip
    args = stage_args(tmp_path, prepared_digits, raw)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        node = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        env = stage_env(RAY_ADDRESS=cluster.address, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen([sys.executable, str(STAGES / "train.py"), *args], env=env, stdout=log, stderr=subprocess.PIPE,
                                    text=True, cwd=tmp_path)  # fmt: skip
            storage = tmp_path / "ray_storage"
            wait_for(lambda: registered_checkpoints(storage), "registered checkpoint", proc, poll=0.1)
            cluster.remove_node(node)  # the worker on it dies with its raylet
            _, stderr = proc.communicate(timeout=300)
        failed = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
        assert_one_line_error(failed, "can no longer place train.num_workers = 2 workers", "checkpoints under", "are kept", ray_logs=True)
        assert not (tmp_path / "generator").exists()
        [run_dir] = storage.glob("train-*")
        last = max(registered_checkpoints(storage))
        assert load_checkpoint(run_dir / f"checkpoint-{last:07d}").step == last  # intact

        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        proc2 = subprocess.run([sys.executable, str(STAGES / "train.py"), *args], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc2.returncode == 0, proc2.stderr[-3000:]
    finally:
        cluster.shutdown()
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["resumed_from_step"] >= last and metrics["num_nodes"] == 2
    assert history_steps(tmp_path / "train" / "history.csv") == list(range(10, 61, 10))
    print(f"\nFIGURE node loss: last checkpoint {last}, resumed from {metrics['resumed_from_step']}")

