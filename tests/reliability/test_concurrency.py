"""Concurrent runs: two registers at once, and augment jobs while the champion moves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ..conftest import write_params
from ..test_registry import mlflow_server, tracking
from .conftest import STAGES, assert_one_line_error, child_env, leftovers

pytestmark = pytest.mark.slow


def test_two_registers_at_once_leave_one_consistent_champion(tmp_path, small_registry, prepared_digits, featurized_digits):
    """Register a good and a bad generator at the same moment on one server. Whichever goes
    first, the good one must end up champion, exactly one decision is "first version", the
    other is compared with it, and both versions are recorded."""
    from mlflow import MlflowClient

    from gan.stages import evaluate

    params = write_params(tmp_path / "params.yaml", register={"model_name": "race-gan", "eval_samples": 300})
    for name in ("good", "bad"):
        argv = ["--params", str(params), "--data", str(prepared_digits), "--model", str(small_registry[name]),
                "--features", str(featurized_digits), "--out", str(tmp_path / "eval" / name)]  # fmt: skip
        assert evaluate.main(argv) == 0
    with mlflow_server(tmp_path / "server") as uri:
        procs = {
            name: subprocess.Popen(
                [sys.executable, str(STAGES / "register.py"), "--params", str(params), "--data", str(prepared_digits),
                 "--model", str(small_registry[name]), "--features", str(featurized_digits), "--eval", str(tmp_path / "eval" / name),
                 "--out", str(tmp_path / name / "decision.json")],
                env=child_env(MLFLOW_TRACKING_URI=uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
            for name in ("good", "bad")
        }
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"{name}: {err[-3000:]}"
        with tracking(uri):
            client = MlflowClient()
            champion = client.get_model_version_by_alias("race-gan", "champion").version
            challenger = client.get_model_version_by_alias("race-gan", "challenger").version
            versions = sorted(mv.version for mv in client.search_model_versions("name='race-gan'"))
            tags = {v: client.get_model_version("race-gan", v).tags for v in versions}
    d = {name: json.loads((tmp_path / name / "decision.json").read_text()) for name in ("good", "bad")}
    assert versions == ["1", "2"] and {d["good"]["challenger_version"], d["bad"]["challenger_version"]} == {"1", "2"}
    first, second = sorted(d.values(), key=lambda x: x["champion_version"] is not None)
    assert first["champion_version"] is None and first["promoted"] and first["reason"].startswith("first version")
    assert second["champion_version"] == first["challenger_version"]  # the later one compared with the earlier
    assert champion == d["good"]["challenger_version"] and d["good"]["promoted"]
    assert challenger == second["challenger_version"]  # the alias the last register set
    assert tags[champion]["decision"] == "champion"
    assert tags[second["challenger_version"]]["decision"] == ("champion" if second["promoted"] else "challenger")
    print(f"\nFIGURE registers: {first['challenger_version']} first, then {second['challenger_version']}; champion v{champion}")


def started(proc: subprocess.Popen, lines: list[str]) -> bool:
    """Whether ``gan augment``'s progress bar (stderr) shows samples written."""
    chunk = proc.stderr.read1(4096).decode(errors="ignore") if proc.poll() is None else ""
    lines.append(chunk)
    return any(int(n) > 0 for n in re.findall(r"\|\s*(\d+)/\d+", "".join(lines)))


def test_augment_jobs_keep_their_version_while_the_champion_moves(tmp_path, small_registry):
    from mlflow import MlflowClient

    from gan.augment import generate

    uri, n = small_registry["uri"], 6000
    cmd = [sys.executable, "-m", "gan.cli", "augment", "--model", "models:/rel-gan@champion", "--num", str(n), "--format", "image_folder",
           "--seed", "3", "--batch-size", "200"]  # fmt: skip
    jobs = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"job{i}")], env=child_env(MLFLOW_TRACKING_URI=uri), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for i in range(2)]  # fmt: skip
    logs: list[list[str]] = [[], []]
    with tracking(uri):
        client = MlflowClient()
        try:
            deadline = time.monotonic() + 300
            while not all(started(j, log) for j, log in zip(jobs, logs, strict=True)):
                assert all(j.poll() is None for j in jobs), "a job ended before it wrote anything"
                assert time.monotonic() < deadline
            client.set_registered_model_alias("rel-gan", "champion", "2")  # promoted while both jobs write
            running_at_promotion = [j.poll() is None for j in jobs]
            after = subprocess.run([*cmd, "--num", "20", "--out", str(tmp_path / "after"), "--no-progress"],
                                   env=child_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True, timeout=300)  # fmt: skip
            for j in jobs:
                j.communicate(timeout=300)
                assert j.returncode == 0
        finally:
            client.set_registered_model_alias("rel-gan", "champion", "1")  # the session's registry as it was
        assert after.returncode == 0, after.stderr
        v1 = generate("models:/rel-gan/1", n, seed=3).arrays()
        v2 = generate("models:/rel-gan/2", n, seed=3).arrays()
    for i in range(2):
        meta = json.loads((tmp_path / f"job{i}" / "metadata.json").read_text())
        assert (meta["model_version"], meta["resolved_uri"]) == ("1", "models:/rel-gan/1")
        files = sorted((tmp_path / f"job{i}").rglob("*.png"))
        assert len(files) == n
        for path in files[:: n // 60] + files[-5:]:  # from the first batch to the last, all version 1
            k = int(path.stem)
            assert np.array_equal(np.asarray(Image.open(path)), v1[0][k, 0]) and int(path.parent.name) == v1[1][k]
            assert not np.array_equal(v1[0][k], v2[0][k])
    assert json.loads((tmp_path / "after" / "metadata.json").read_text())["model_version"] == "2"
    print(f"\nFIGURE augment: jobs still running at the promotion: {running_at_promotion}")


def test_two_augment_jobs_writing_one_output_exclude_each_other(tmp_path, small_registry):
    """Before: both reported success and the first one's output was silently replaced. Now the
    output's lock (or, when the first has finished, its non-empty folder) stops the second."""
    from gan.atomic import output_lock

    out, n = tmp_path / "synth", 300
    cmd = [sys.executable, "-m", "gan.cli", "augment", "--model", "models:/rel-gan@champion", "--num", str(n), "--format", "image_folder",
           "--no-progress", "--out", str(out)]  # fmt: skip
    env = child_env(MLFLOW_TRACKING_URI=small_registry["uri"])
    with output_lock(out):  # a writer of the output is at work: a job started now must not write
        held = subprocess.run([*cmd, "--seed", "0"], env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(held, f"{out} is being written by another process", "choose another output")
    assert not out.exists()

    jobs = {seed: subprocess.Popen([*cmd, "--seed", str(seed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed in (1, 2)}  # fmt: skip
    done = {seed: subprocess.CompletedProcess(j.args, j.wait(timeout=300), *j.communicate()) for seed, j in jobs.items()}
    assert sorted(p.returncode for p in done.values()) == [0, 2], {s: p.stderr[-2000:] for s, p in done.items()}
    winner = next(s for s, p in done.items() if p.returncode == 0)
    loser = next(p for p in done.values() if p.returncode != 0)
    line = assert_one_line_error(loser, str(out))
    assert "is being written by another process" in line or "exists and is not empty" in line
    assert json.loads((out / "metadata.json").read_text())["seed"] == winner  # the winner's output, whole
    assert len(list(out.rglob("*.png"))) == n and leftovers(tmp_path) == []
    print(f"\nFIGURE augment race: seed {winner} won; the other said: {line[:80]}")


@pytest.mark.parametrize("stage", ["train", "tune"])
def test_a_second_train_or_tune_stage_on_one_output_stops_at_once(tmp_path, stage):
    """A second train (or tune) stage on the same outputs would resume the same Ray run (or
    search) from the same checkpoints and race the first to the outputs: it stops before
    reading anything, while the first holds its output."""
    import importlib

    from gan.atomic import output_lock
    from gan.errors import GanError

    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / stage
    with output_lock(out), pytest.raises(GanError, match=rf"^{out} is being written by another process right now"):
        importlib.import_module(f"pipelines.{stage}").main(["--params", str(params), "--data", str(tmp_path / "absent"), "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
