"""Security: nothing a user did not produce is unpickled, servers bind loopback, secrets stay out.

The end-to-end credential check (a training and registration logged to a real server
through a URI with user:password@ and a token in the environment) lives in
test_mlflow_outage.py, which has that server running anyway.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.errors import GanError

from ..conftest import ROOT, write_params
from .conftest import assert_one_line_error, run_stage

SECRET = "s3cr3t-Pa55"


class Payload:
    """Unpickling this object runs ``Path(marker).touch()``: the marker proves whether it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


def test_pickle_bearing_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, marker):
    from gan.training.checkpoint import DIGEST, STATE, load_checkpoint

    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"step": 1, "G": Payload(marker)}, folder / STATE)  # a .pt with a malicious __reduce__
    # the attacker can recompute the digest: the refusal must come from weights_only, not from it
    (folder / DIGEST).write_text(hashlib.sha256((folder / STATE).read_bytes()).hexdigest())
    with pytest.raises(GanError, match=r"state.pt cannot be loaded \(UnpicklingError\); the checkpoint is corrupt"):
        load_checkpoint(folder)
    assert not marker.exists()
    # the same file handed over as Inception weights (the one other torch.load in the code)
    from gan.features import load_inception

    shutil.copy(folder / STATE, tmp_path / "inception.pth")
    with pytest.raises(GanError, match="cannot be read as a tensor state dict"):
        load_inception(tmp_path / "inception.pth")
    assert not marker.exists()
    torch.load(folder / STATE, weights_only=False)  # the payload is real: a plain torch.load runs it
    assert marker.exists()


def test_pickle_disguised_as_weights_or_arrays_is_refused(tmp_path, marker, small_registry, prepared_digits):
    import pickle

    from gan.config import PrepareConfig
    from gan.data import prepare_dataset
    from gan.export import load_generator

    model = tmp_path / "generator"
    shutil.copytree(small_registry["good"], model)
    (model / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(GanError, match="corrupt or was tampered with"):
        load_generator(model)
    np.savez(tmp_path / "data.npz", x=np.array([Payload(marker)] * 4, dtype=object))
    with pytest.raises(GanError, match="cannot be read as .npz"):
        prepare_dataset(PrepareConfig(source="npz", path=str(tmp_path / "data.npz"), image_size=8), tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- a static check of the code

SOURCES = [p for d in ("gan", "pipelines", "bench", "scripts") for p in sorted((ROOT / d).rglob("*.py"))]
UNSAFE_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal", "_pickle"}


def unsafe_calls(path: Path) -> list[str]:
    """Deserialisation that could run code: pickle-family imports, torch.load without
    weights_only=True, np.load without allow_pickle=False, yaml.load/unsafe_load, read_pickle."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where} imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = ast.unparse(node.func.value)
        name, kwargs = node.func.attr, {k.arg: ast.unparse(k.value) for k in node.keywords}
        if owner == "torch" and name == "load" and kwargs.get("weights_only") != "True":
            found.append(f"{where} torch.load without weights_only=True")
        if owner in ("np", "numpy") and name == "load" and kwargs.get("allow_pickle") != "False":
            found.append(f"{where} np.load without allow_pickle=False")
        if owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all"):
            found.append(f"{where} yaml.{name} (use yaml.safe_load)")
        if name == "read_pickle":
            found.append(f"{where} read_pickle")
    return found


def test_no_code_path_unpickles_untrusted_files(tmp_path):
    assert len(SOURCES) > 40  # the walk really sees the code
    problems = [p for path in SOURCES for p in unsafe_calls(path)]
    assert problems == []
    # and the checker itself catches each unsafe form
    probe = tmp_path / "probe.py"
    probe.write_text("import pickle\nimport torch, numpy as np, yaml\ntorch.load('a')\nnp.load('b')\nyaml.load('c')\n")
    assert len(unsafe_calls(probe)) == 4


# the command with its backslash-continued lines
MLFLOW_SERVE = re.compile(r"mlflow\s+(server|ui)\b(?:[^\n`|\\]|\\\n)*")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def test_every_mlflow_server_command_in_the_project_binds_loopback():
    """What the project runs (Makefile, README, scripts, code) starts MLflow on 127.0.0.1, by an
    explicit --host or MLflow's default. A docs page may show a team server on the network
    only together with --allowed-hosts (the Host-header check that goes with it)."""
    runnable = [ROOT / "Makefile", ROOT / "README.md", ROOT / "pyproject.toml", *sorted(p for p in (ROOT / "scripts").rglob("*") if p.is_file()), *SOURCES]
    docs = sorted((ROOT / "docs").glob("*.md"))
    seen = 0
    for f in [*runnable, *docs]:
        for m in MLFLOW_SERVE.finditer(f.read_text(errors="ignore") if f.exists() else ""):
            cmd, seen = m.group(0), seen + 1
            host = re.search(r"(?:--host|-h)[ =](\S+)", cmd)
            if host is None or host.group(1).strip("'\"") in LOOPBACK:
                continue
            assert f in docs and "--allowed-hosts" in cmd, f"{f.relative_to(ROOT)} binds {host.group(1)}: {cmd}"
    assert seen >= 1  # the README's `mlflow ui` at least
    from mlflow.cli import cli

    defaults = {p.name: p.default for name in ("server", "ui") if name in cli.commands for p in cli.commands[name].params}
    assert defaults["host"] == "127.0.0.1"  # `mlflow ui`/`server` without --host listen on loopback only


def test_credentials_in_the_tracking_uri_never_reach_the_console(tmp_path, small_registry, featurized_digits, prepared_digits):
    from ..test_registry import free_port

    uri = f"http://alice:{SECRET}@127.0.0.1:{free_port()}"
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text('{"fid": 1.0}')
    (eval_dir / "samples.png").write_bytes(b"\x89PNG")
    params = write_params(tmp_path / "params.yaml")
    proc = run_stage("register", "--params", str(params), "--data", str(prepared_digits), "--model", str(small_registry["good"]),
                     "--features", str(featurized_digits), "--eval", str(eval_dir), "--out", str(tmp_path / "registry" / "decision.json"),
                     MLFLOW_TRACKING_URI=uri, MLFLOW_TRACKING_TOKEN=SECRET, MLFLOW_TRACKING_PASSWORD=SECRET)  # fmt: skip
    assert_one_line_error(proc, "http://***@127.0.0.1:", "is not reachable")
    proc2 = run_stage(["-m", "gan.cli", "augment"], "--model", "models:/rel-gan@champion", "--num", "3", "--out", str(tmp_path / "synth"),
                      MLFLOW_TRACKING_URI=uri, MLFLOW_TRACKING_TOKEN=SECRET)  # fmt: skip
    assert_one_line_error(proc2, "http://***@127.0.0.1:")
    for p in (proc, proc2):
        assert SECRET not in p.stdout + p.stderr and "alice" not in p.stdout + p.stderr
    assert not (tmp_path / "registry").exists() and not (tmp_path / "synth").exists()
