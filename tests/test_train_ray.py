"""Training on real Ray Train V2: DDP across workers and nodes, a worker killed mid-run,
the whole stage killed and re-run. Tiny configs; each test is one or two Ray Train runs."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
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


def unshare_works() -> bool:
    """Whether this user may make a mount namespace with a tmpfs in it (root, or a kernel that lets users)."""
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


def start_blind_node(address: str, hidden: Path, cache: Path) -> subprocess.Popen:
    """A second Ray node that cannot see ``hidden``: its own mount namespace with an empty tmpfs over it,
    as a cluster node that lacks the driver's project folder."""
    ray_cli = Path(sys.executable).parent / "ray"
    script = (f"mount -t tmpfs none {shlex.quote(str(hidden))} && exec {shlex.quote(str(ray_cli))} start "
              f"--address={address} --num-cpus=1 --block --disable-usage-stats")  # fmt: skip
    env = {**os.environ, "GAN_INPUT_CACHE": str(cache)}
    return subprocess.Popen(["unshare", "--mount", "sh", "-c", script], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def wait_for_alive_nodes(address: str, count: int, timeout: float = 90) -> None:
    alive = "sum(n['Alive'] for n in ray.nodes())"
    code = (f"import ray, time; ray.init(address={address!r}, logging_level='ERROR'); t = time.time()\n"
            f"while {alive} < {count} and time.time() - t < {timeout}: time.sleep(0.5)\nprint({alive})")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 60)
    assert out.stdout.strip().endswith(str(count)), out.stderr[-2000:]


@pytest.fixture(scope="module")
def blind_cluster(prepared_digits, featurized_digits, tmp_path_factory):
    """A local two-node cluster whose second node has an empty tmpfs over the project folder
    (the prepared data and the feature network), as a cluster node that lacks the driver's
    files; yields (address, project, node 2's input cache)."""
    from ray.cluster_utils import Cluster

    if not unshare_works():
        pytest.skip("needs `unshare --mount` with mount rights (root) to hide the project from the second node")
    root = tmp_path_factory.mktemp("blind")
    project, cache = root / "project", root / "node2-cache"
    shutil.copytree(prepared_digits, project / "prepared")
    shutil.copytree(featurized_digits, project / "features")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    node = start_blind_node(cluster.address, project, cache)
    try:
        wait_for_alive_nodes(cluster.address, 2)
        yield cluster.address, project, cache
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(timeout=60)
        cluster.shutdown()


def run_stage(stage: str, args: list[str], address: str, tmp_path: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / f"{stage}.py"), *args],
        env=stage_env(RAY_ADDRESS=address, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_node2_read_staged_copies(storage: Path, cache: Path) -> None:
    """Both inputs were staged once under storage; node 2 read the data from its own copy of them."""
    staged = {p.name.split("-")[0]: p.name for p in (storage / "_inputs").iterdir()}
    assert set(staged) == {"data", "features"}
    copied = {p.name for p in cache.iterdir() if p.is_dir()}
    assert staged["data"] in copied and all((cache / name / "_STAGED").exists() for name in copied)


def test_two_workers_on_two_nodes_where_one_cannot_see_the_project(blind_cluster, tmp_path):
    """STRICT_SPREAD puts one worker on each node; the stage connects through RAY_ADDRESS, as on a
    real cluster. The blind node's worker reads the inputs that the driver staged under
    train.storage_path, copied once into its node-local cache; the head's worker reads the driver's path."""
    address, project, cache = blind_cluster
    raw = tiny_raw(tmp_path, num_workers=2, placement_strategy="STRICT_SPREAD", steps=6, eval_samples=64)
    args = stage_args(tmp_path, project / "prepared", raw)
    args[args.index("--features") + 1] = str(project / "features")
    proc = run_stage("train", args, address, tmp_path)
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["num_workers"] == 2 and metrics["num_nodes"] == 2
    assert metrics["replica_weight_diff"] == 0.0 and metrics["steps"] == 6
    assert "step 6/6" in proc.stdout  # rank 0's progress line reaches the driver
    assert_node2_read_staged_copies(tmp_path / "ray_storage", cache)


def test_a_two_worker_tune_trial_spans_the_node_that_cannot_see_the_project(blind_cluster, tmp_path):
    """One tune trial of two workers (one CPU each, one CPU per node: one worker per node) on the same cluster."""
    address, project, cache = blind_cluster
    shutil.rmtree(cache, ignore_errors=True)  # the train test's copies
    tune = {"num_samples": 1, "max_steps": 6, "eval_every": 6, "eval_samples": 64, "cpus_per_trial": 1, "workers_per_trial": 2,
            "max_concurrent_trials": 1, "storage_path": str(tmp_path / "ray"), "search_alg": "random", "scheduler": "fifo"}  # fmt: skip
    raw = tiny_raw(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, "tune": tune}))
    out = tmp_path / "tune"
    run_stage("tune", ["--params", str(tmp_path / "params.yaml"), "--data", str(project / "prepared"),
                       "--features", str(project / "features"), "--out", str(out)], address, tmp_path)  # fmt: skip
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["status"] for r in rows] == ["completed"], rows
    assert_node2_read_staged_copies(tmp_path / "ray", cache)


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
