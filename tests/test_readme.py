"""The README's own commands that no stage test runs: the CLI's listings and the MLflow UI.

    pytest tests/test_readme.py

The pipeline commands (`make repro` -> `gan repro` -> `dvc repro`, `dvc exp run`, `gan augment`,
`mlflow models serve`, `gan retrain`, the local cluster script) are exercised by
test_pipeline_dvc, test_ray_session, test_augment, test_registry, test_retrain and test_cluster_script.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .test_registry import free_port, stop, venv_env, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on ``port``, read from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr)
            if len(raw) == 4:  # little-endian IPv4
                found.add(".".join(str(b) for b in raw[::-1]))
            else:
                words = [raw[i:i + 4][::-1].hex() for i in range(0, 16, 4)]
                found.add("::1" if "".join(words) == "0" * 31 + "1" else ":".join(words))
    return found


def gan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gan.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_gan_help_lists_every_stage_named_in_the_readme():
    proc = gan("--help")
    assert proc.returncode == 0, proc.stderr
    for stage in ("prepare", "featurize", "tune", "train", "evaluate", "register", "augment", "repro", "retrain", "check", "models"):
        assert re.search(rf"^\s+{stage}\b", proc.stdout, re.M), f"`gan --help` does not list {stage}"


def test_gan_models_lists_what_the_readme_promises():
    proc = gan("models")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.lower()
    from gan.tasks import TASKS

    for name in (*TASKS, "mlp", "dcgan", "resnet", "infogan", "minimax", "nonsaturating", "hinge", "wgan-gp", "lsgan",
                 "spectral", "r1", "ema", "diffaugment"):
        assert name in text, f"`gan models` does not mention {name}"
    # every value config accepts for a task's method is listed (detect's were once "see the module docstring")
    from typing import get_args

    from gan.config import ARCHS, LOSSES, DetectConfig, TranslateConfig, UpscaleConfig

    methods = [*ARCHS, *LOSSES, *get_args(TranslateConfig.model_fields["arch"].annotation),
               *get_args(DetectConfig.model_fields["method"].annotation), *get_args(UpscaleConfig.model_fields["generator"].annotation)]
    assert [m for m in methods if m not in text] == []


def test_gan_check_accepts_the_shipped_params():
    proc = gan("check")
    assert proc.returncode == 0 and proc.stdout.strip() == "params.yaml: ok", proc.stderr


@pytest.mark.slow
def test_mlflow_ui_command_serves_the_store_on_loopback_only(tmp_path):
    """`mlflow ui --backend-store-uri sqlite:///mlflow.db` (the README's UI command) binds 127.0.0.1."""
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in README
    port, log = free_port(), tmp_path / "ui.log"
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True, env=venv_env())
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=120, log=log)
        addresses = listening_addresses(port)
        assert addresses == {"127.0.0.1"}, f"the UI listens on {addresses}, not on loopback only"
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        stop(proc)
