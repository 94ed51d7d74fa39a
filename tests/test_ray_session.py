"""One local Ray per pipeline run (gan.ray_session.pipeline_cluster, gan repro).

Each case runs in a child process: the test process may hold the session's Ray
(``ray_cluster``), which a ``ray.init`` here would reuse instead of starting one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

LAUNCHER = textwrap.dedent("""
    import json, os, subprocess, sys
    import ray
    from gan.ray_session import pipeline_cluster

    child = "import os, ray; ray.init(address=os.environ['RAY_ADDRESS']); print(ray.get_runtime_context().gcs_address)"
    with pipeline_cluster() as address:
        inside = os.environ["RAY_ADDRESS"]
        joined = [subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                  for _ in range(2)]
        raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    print(json.dumps({"address": address, "inside": inside, "joined": joined, "after": os.environ.get("RAY_ADDRESS"), "raylet": raylet}))
""")


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.slow
def test_children_join_the_one_cluster_and_only_it_stops(ray_cluster):
    import ray

    out = json.loads(run_python(LAUNCHER).stdout.strip().splitlines()[-1])
    assert out["inside"] == out["address"] and out["joined"] == [out["address"]] * 2, out
    assert out["after"] is None, "RAY_ADDRESS outlived the block"
    deadline = time.monotonic() + 30
    while (pid_alive(out["raylet"]) or accepts(out["address"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(out["raylet"]) and not accepts(out["address"]), "the pipeline's Ray still runs after the block"
    # the other Ray on this machine (this session's) was left alone
    assert ray.get(ray.put(41)) + 1 == 42


def test_a_given_cluster_is_used_as_it_is():
    code = "from gan.ray_session import pipeline_cluster\nwith pipeline_cluster() as a:\n    print(a)\nimport ray; print(ray.is_initialized())"
    out = run_python(code, env={"RAY_ADDRESS": "10.0.0.9:6379"}).stdout.split()
    assert out == ["10.0.0.9:6379", "False"], "a cluster given in RAY_ADDRESS must not be started, joined early or stopped"


def test_run_child_passes_sigterm_to_the_child_group_and_waits_for_it(tmp_path):
    marker = tmp_path / "cleaned"
    # the child (and its own child, as a DVC stage under dvc) clean up on SIGTERM, slowly
    child = textwrap.dedent(f"""
        import signal, sys, time, pathlib
        def bye(*_):
            time.sleep(1.0)
            pathlib.Path({str(marker)!r}).write_text("yes")
            sys.exit(143)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(60)
    """)
    code = textwrap.dedent(f"""
        import sys
        from gan import signals
        from gan.ray_session import run_child
        signals.install()
        print("status", run_child([sys.executable, "-c", {child!r}]), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "status 143" and marker.read_text() == "yes"


@pytest.mark.slow
def test_gan_repro_runs_the_stages_on_one_ray_and_a_noop_starts_none(tiny_pipeline):
    from .pipeline_repo import run

    repo, out = tiny_pipeline  # made by `gan repro` (tests/conftest.py)
    first = out.splitlines()[0]
    assert first.startswith("repro: every Ray stage of this run uses the Ray at "), first
    address = first.rsplit(" ", 1)[1]
    stage_lines = [ln for ln in out.splitlines() if ln.startswith("train: run ") or (ln.startswith("tune: ") and " trials x " in ln)]
    assert len(stage_lines) == 2 and all(f"on Ray at {address}" in ln for ln in stage_lines), stage_lines
    assert not accepts(address), "gan repro left its Ray running"

    again = run(repo, str(BIN / "gan"), "repro")
    assert "Ray" not in again.stdout and "up to date" in again.stdout + again.stderr, again


def test_gan_repro_outside_a_project_says_so_and_starts_nothing(tmp_path):
    proc = subprocess.run([str(BIN / "gan"), "repro"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert proc.stderr.strip() == f"error: {tmp_path} has no dvc.yaml; run gan repro in the project's directory (where make repro runs)."
    assert list(tmp_path.iterdir()) == []


def test_ray_train_polls_at_the_products_interval_unless_the_user_chose_one(monkeypatch):
    """Ray Train runs poll every TRAIN_POLL_INTERVAL_S (docs/benchmarks.md, "Ray Train's poll interval"); a value set wins."""
    from gan.ray_session import TRAIN_POLL_INTERVAL_S, poll_ray_train_often

    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    poll_ray_train_often()
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == TRAIN_POLL_INTERVAL_S == "0.5"
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    poll_ray_train_often()
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
