"""SIGTERM is handled like Ctrl-C, Ctrl-C ends tune and train with their own sentence, and the
leftovers of a SIGKILLed run are cleaned by the next one.

Before: SIGTERM (what ``timeout``, ``kill``, CI cancellation and Kubernetes send) during
prepare or ``gan augment`` left hidden ``.NAME.tmp-*`` folders beside the output and printed
nothing; Ctrl-C during tune exited 0 and wrote ``tune/best.json`` from the unfinished
search; Ctrl-C during train exited 1 without a line of its own.

Ctrl-C is sent as a terminal sends it: SIGINT to the whole process group of the stage
(its own session here, so the test runner is not part of it), Ray's processes included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ..conftest import write_params
from .conftest import STAGES, assert_one_line_error, child_env, leftovers, run_stage, tree


def start(script: str | list[str], *args: str, **env: str) -> subprocess.Popen:
    """A stage or CLI process in its own session (its own process group), output captured."""
    head = [str(STAGES / f"{script}.py")] if isinstance(script, str) else list(script)
    return subprocess.Popen([sys.executable, *head, *args], env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str, limit: float = 300) -> None:
    """Poll until ``ready()``; fail if the process ends first (a deadline only guards against a hang)."""
    deadline = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}:\n{out[-1500:]}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {limit}s"
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def temp_dirs(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.tmp-*"))


def partly_written(folder: Path, name: str, pattern: str, other_than: list[Path] = ()) -> Callable[[], bool]:
    """True once a temporary output of ``name`` under ``folder`` (not one of ``other_than``) holds a file matching ``pattern``."""
    return lambda: any(next(t.rglob(pattern), None) is not None for t in temp_dirs(folder, name) if t not in other_than)


def test_prepare_sigkilled_then_sigtermed_leaves_the_previous_output_and_nothing_else(tmp_path):
    out = tmp_path / "prepared"
    assert run_stage("prepare", "--params", str(write_params(tmp_path / "ok.yaml")), "--out", str(out)).returncode == 0
    before = tree(out)
    rng = np.random.default_rng(0)  # 50,000 images in 100 shards: the run is mid-write at its first shard
    np.savez(tmp_path / "big.npz", x=rng.integers(0, 255, (50_000, 8, 8), dtype=np.uint8), y=rng.integers(0, 10, 50_000))
    params = write_params(tmp_path / "big.yaml", prepare={"source": "npz", "path": str(tmp_path / "big.npz"), "image_size": 8, "shard_size": 500})

    killed = start("prepare", "--params", str(params), "--out", str(out))
    wait_until(partly_written(tmp_path, "prepared", "x-*.npy"), killed, "a first shard")
    killed.send_signal(signal.SIGKILL)  # cannot be handled: its temporary folder stays
    finish(killed)
    stale = temp_dirs(tmp_path, "prepared")
    assert len(stale) == 1 and tree(out) == before

    termed = start("prepare", "--params", str(params), "--out", str(out))
    wait_until(partly_written(tmp_path, "prepared", "x-*.npy", other_than=stale), termed, "a first shard of the second run")
    assert not stale[0].exists()  # the killed run's leftover was removed before the second run wrote
    termed.send_signal(signal.SIGTERM)
    proc = finish(termed)
    assert proc.returncode == 143
    assert_one_line_error(proc, "stopped by SIGTERM", "outputs were left as they were")
    assert tree(out) == before and leftovers(tmp_path) == [] and not (tmp_path / ".prepared.lock").exists()


def test_augment_sigtermed_mid_write_leaves_nothing(tmp_path, small_registry):
    out = tmp_path / "synth"
    job = start(["-m", "gan.cli", "augment"], "--model", "models:/rel-gan@champion", "--num", "50000", "--out", str(out),
                "--format", "image_folder", "--seed", "0", "--no-progress", MLFLOW_TRACKING_URI=small_registry["uri"])  # fmt: skip
    wait_until(partly_written(tmp_path, "synth", "*.png"), job, "a first PNG")
    job.send_signal(signal.SIGTERM)
    proc = finish(job)
    assert proc.returncode == 143
    assert_one_line_error(proc, "stopped by SIGTERM")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no temporary folder, no lock


def test_ctrl_c_during_tune_exits_130_and_keeps_the_previous_outputs(tmp_path, prepared_digits, featurized_digits):
    storage, out = tmp_path / "ray", tmp_path / "tune"
    out.mkdir()
    (out / "best.json").write_text('{"previous": true}\n')
    before = tree(out)
    params = write_params(tmp_path / "params.yaml", tune={
        "num_samples": 2, "max_steps": 4000, "eval_every": 20, "eval_samples": 100, "scheduler": "fifo", "cpus_per_trial": 1,
        "max_concurrent_trials": 2, "storage_path": str(storage), "lr_G": [1e-4, 1e-3], "lr_D": [1e-4, 1e-3]})  # fmt: skip
    job = start("tune", "--params", str(params), "--data", str(prepared_digits), "--features", str(featurized_digits), "--out", str(out),
                MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    wait_until(lambda: next(storage.rglob("checkpoint_*"), None) is not None, job, "a trial checkpoint")
    os.killpg(job.pid, signal.SIGINT)
    proc = finish(job)
    assert proc.returncode == 130, proc.stderr[-3000:]
    line = assert_one_line_error(proc, "tune was interrupted (SIGINT)", f"the outputs in {out} were left as they were", "running the same command again resumes", ray_logs=True)
    assert tree(out) == before
    from ray.tune import Tuner

    assert Tuner.can_restore(line.split("resumes the search saved in ")[1].rstrip("."))  # what the re-run resumes


def test_ctrl_c_during_train_exits_130_with_its_own_line(tmp_path, prepared_digits):
    storage, model_out = tmp_path / "ray", tmp_path / "generator"
    params = write_params(tmp_path / "params.yaml", train={"steps": 100_000, "checkpoint_every": 20, "storage_path": str(storage)},
                          tune={"enabled": False})  # fmt: skip
    job = start("train", "--params", str(params), "--data", str(prepared_digits), "--features", str(tmp_path / "none"),
                "--tuned", str(tmp_path / "none.json"), "--model-out", str(model_out), "--out", str(tmp_path / "train"),
                MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    wait_until(lambda: next(storage.rglob("checkpoint_*"), None) is not None, job, "a checkpoint")
    os.killpg(job.pid, signal.SIGINT)
    proc = finish(job)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert_one_line_error(proc, "training was interrupted (SIGINT)", "no output was written", "resumes from the last one", ray_logs=True)
    assert not model_out.exists() and not (tmp_path / "train").exists()


def test_a_run_killed_between_its_two_renames_gets_the_previous_output_back(tmp_path):
    """A writer killed after moving the previous output aside (``.NAME.old-<pid>``) and before
    moving its own in leaves no output at all: the next writer puts the previous one back
    before anything else, so even a failing next run leaves it in place."""
    from gan.atomic import atomic_dir

    out = tmp_path / "prepared"
    with atomic_dir(out) as tmp:
        (tmp / "manifest.json").write_text("previous")
    os.rename(out, tmp_path / ".prepared.old-4194304")  # the state such a kill leaves (a PID no process has)
    (tmp_path / ".prepared.tmp-4194304-abcd1234").mkdir()
    with pytest.raises(RuntimeError), atomic_dir(out):
        raise RuntimeError("the next run fails too")
    assert (out / "manifest.json").read_text() == "previous" and leftovers(tmp_path) == []
