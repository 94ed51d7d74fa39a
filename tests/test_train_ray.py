"""Training on real Ray Train V2: DDP across workers and nodes, a worker killed mid-run,
the whole stage killed and re-run. Tiny configs; each test is one or two Ray Train runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gan.config import parse_params

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def tiny_raw(tmp_path: Path, model: dict | None = None, **train) -> dict:
    return {
        "prepare": {"image_size": 8},
        "model": {"arch": "mlp", "conditional": True, "z_dim": 8, "g_width": 16, "d_width": 16, "loss": "hinge", **(model or {})},
        "train": {"batch_size": 32, "log_every": 2, "checkpoint_every": 4, "sample_every": 4, "max_failures": 1,
                  "storage_path": str(tmp_path / "ray_storage"), "seed": 1, **train},
    }


def stage_args(tmp_path: Path, data: Path, params: dict) -> list[str]:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return ["--params", str(path), "--data", str(data), "--features", str(tmp_path / "no-features"),
            "--tuned", str(tmp_path / "no-best.json"), "--model-out", str(tmp_path / "generator"), "--out", str(tmp_path / "train")]


def stage_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def registered_checkpoints(storage: Path) -> list[int]:
    """Steps of the checkpoints Ray Train has recorded in its run snapshot."""
    steps = []
    for snapshot in storage.glob("train-*/checkpoint_manager_snapshot.json"):
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (json.JSONDecodeError, KeyError):
            continue  # being written
        steps += [int(r["checkpoint_dir_name"].split("-")[1]) for r in results]
    return steps


def history_steps(path: Path) -> list[int]:
    lines = path.read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def kill_rank1_at_step10(rank: int, step: int, resumed: bool) -> None:
    """Rank 1's process dies hard (a real death, not an exception) at step 10 of the first attempt."""
    if rank == 1 and step >= 10 and not resumed:
        os._exit(1)


def test_two_workers_stay_in_sync_and_survive_a_killed_worker(ray_cluster, prepared_digits, tmp_path, monkeypatch):
    """One 2-worker run: DDP keeps replicas identical (BatchNorm D, lazy R1, n_critic 2), and
    rank 1 dies (os._exit) at step 10: Ray restarts the group from the last checkpoint."""
    from gan.training.ray_run import run_training

    model = {"arch": "dcgan", "g_width": 8, "d_width": 8, "spectral_norm_D": False}
    params = parse_params(tiny_raw(tmp_path, model, num_workers=2, steps=12, n_critic=2, r1_gamma=1.0, r1_interval=2))
    outcome = run_training(params, prepared_digits, name="train-ddp-fault", report_hook=kill_rank1_at_step10)

    s = outcome.summary
    assert s["world_size"] == 2 and s["step"] == 12 and outcome.checkpoint.step == 12
    assert s["start_step"] in (4, 8)  # this attempt started from a checkpoint taken before the death
    rows = s["replica_checksums"]
    assert len(rows) == 2 and rows[0] == rows[1]  # identical G, D and G_ema on both ranks
    # the history survives the restart: checkpointed rows plus the rows after the resume
    assert [int(r["step"]) for r in outcome.checkpoint.history] == [2, 4, 6, 8, 10, 12]
    assert sorted(outcome.checkpoint.samples) == ["step-0000004.png", "step-0000008.png", "step-0000012.png"]


def test_two_workers_on_two_nodes(prepared_digits, tmp_path):
    """A local two-node cluster; STRICT_SPREAD puts one worker on each node; the stage
    connects through RAY_ADDRESS, as on a real cluster."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        raw = tiny_raw(tmp_path, num_workers=2, placement_strategy="STRICT_SPREAD", steps=6)
        proc = subprocess.run(
            [sys.executable, str(ROOT / "pipelines" / "train.py"), *stage_args(tmp_path, prepared_digits, raw)],
            env=stage_env(RAY_ADDRESS=cluster.address, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}"),
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        cluster.shutdown()
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["num_workers"] == 2 and metrics["num_nodes"] == 2
    assert metrics["replica_weight_diff"] == 0.0 and metrics["steps"] == 6
    assert "step 6/6" in proc.stdout  # rank 0's progress line reaches the driver


def test_killed_stage_resumes_from_last_checkpoint_end_to_end(ray_cluster, prepared_digits, tmp_path, mlflow_sqlite, monkeypatch):
    """Kill the whole train stage after its first checkpoint, run it again: it resumes,
    finishes the planned steps and writes every output; one MLflow run."""
    import mlflow

    monkeypatch.chdir(tmp_path)  # a SQLite store puts artifacts under ./mlruns

    from gan.export import load_generator
    from gan.stages.train import main

    raw = tiny_raw(tmp_path, steps=200, log_every=20, checkpoint_every=20, sample_every=100)
    args = stage_args(tmp_path, prepared_digits, raw)
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "train.py"), *args],
                            env=stage_env(RAY_ADDRESS=address, MLFLOW_TRACKING_URI=mlflow_sqlite),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    storage = tmp_path / "ray_storage"
    deadline = time.time() + 300
    while not registered_checkpoints(storage):  # written to storage and recorded by Ray Train
        assert proc.poll() is None, "the first run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "generator").exists()  # nothing half-written by the killed run
    assert max(registered_checkpoints(storage)) < 200

    assert main(args) == 0  # the same stage again, in this process (Ray already connected)

    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["steps"] == 200 and metrics["resumed_from_step"] >= 20
    assert metrics["hyperparams"]["source"] == "params.yaml" and metrics["throughput/img_s"] > 0
    assert history_steps(tmp_path / "train" / "history.csv") == list(range(20, 201, 20))
    assert sorted(p.name for p in (tmp_path / "train" / "samples").iterdir()) == ["step-0000100.png", "step-0000200.png"]
    G, spec = load_generator(tmp_path / "generator")
    assert spec["step"] == 200 and spec["num_classes"] == 10 and spec["ray_run"].startswith("train-")
    client = mlflow.MlflowClient(mlflow_sqlite)
    runs = client.search_runs([client.get_experiment_by_name("gan-train").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == spec["mlflow_run_id"]
    assert runs[0].data.tags["data_hash"] == json.loads((prepared_digits / "manifest.json").read_text())["hash"]
    assert runs[0].data.tags["git_commit"]
