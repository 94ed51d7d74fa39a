"""scripts/local_cluster.sh: a real two-node Ray cluster runs the train stage across both nodes,
and stopping it leaves every other Ray on the machine running.

    pytest -q tests/test_cluster_script.py      # about a minute on 2 cores

The train stage runs with train.num_workers: 2 and placement_strategy: STRICT_SPREAD
(one worker per node, or no placement at all) on the tiny config; the session's own
local Ray (fixture ``ray_cluster``) stands for another user's Ray that must survive.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT
from .pipeline_repo import BIN, tiny_params

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "local_cluster.sh"


def free_port() -> int:
    """A head port whose neighbours the script uses (PORT..PORT+9, PORT+100..PORT+105) are all free.

    Drawn below the kernel's ephemeral range, away from Ray's defaults, so that
    concurrent sessions on this machine do not meet."""
    for _ in range(200):
        port = random.randrange(30000, 32500)
        wanted = [*range(port, port + 10), *range(port + 100, port + 106)]
        if all(_bindable(p) for p in wanted):
            return port
    raise RuntimeError("no free port range for the local cluster")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pids_naming(text: str) -> set[int]:
    """PIDs of processes whose command line contains ``text`` (ps, as the script does)."""
    # -ww: whole command lines; ps cuts them to COLUMNS (80 under pytest) otherwise
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return {int(line.split(None, 1)[0]) for line in ps.splitlines() if text in line and "ps -ww" not in line}


def alive(pid: int) -> bool:
    stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(stat) and not stat.startswith("Z")


def test_train_runs_on_both_nodes_and_stop_spares_other_rays(ray_cluster, prepared_digits, featurized_digits, tmp_path):
    # the session's Ray: its daemons name its session directory on their command lines
    other_session = ray_cluster._private.worker._global_node.get_session_dir_path()
    others = pids_naming(other_session)
    assert others, f"no process names {other_session}"

    port = free_port()
    temp_dir = Path(f"/tmp/ray-gan-{port}")  # the script's default; short, for Ray's socket paths
    params = tiny_params(train={"num_workers": 2, "placement_strategy": "STRICT_SPREAD", "steps": 20}, tune={"enabled": False})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env.update(GAN_RAY_PORT=str(port), PATH=f"{BIN}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    stage = [str(BIN / "python"), str(ROOT / "pipelines" / "train.py"), "--data", str(prepared_digits),
             "--features", str(featurized_digits), "--tuned", "none"]  # fmt: skip
    try:
        proc = subprocess.run([str(SCRIPT), "run", "--", *stage], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
        assert metrics["num_workers"] == 2 and metrics["num_nodes"] == 2, metrics
        assert (tmp_path / "models" / "generator" / "model.safetensors").stat().st_size > 0

        # `run` stopped its own cluster on the way out ...
        assert not [p for p in pids_naming(f"{temp_dir}/") if alive(p)], "the local cluster's processes outlived `run`"
        # ... and nothing else: the session's Ray daemons still run and still take work
        assert all(alive(pid) for pid in others), "stopping the local cluster killed another Ray's processes"
        ping = ray_cluster.remote(lambda: 42)
        assert ray_cluster.get(ping.remote(), timeout=120) == 42
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)

