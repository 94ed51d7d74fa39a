"""The register stage against a real `mlflow server` on 127.0.0.1, and the registered model itself.

One module-scoped world: two tiny 8x8 generators (a good one fitted to the class means
of the digits, a bad one left at its random initialisation), each exported and run
through the real evaluate stage, then registered bad -> good -> bad on one server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import torch

from gan.errors import GanError

from .conftest import ROOT, SESSION_TRACKING_URI, write_params

MODEL = "test-gan"
IMAGE_SIZE, Z_DIM = 8, 16


# ---------------------------------------------------------------- helpers (also used by test_augment)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this interpreter's bin first (uvicorn for `models serve`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = SESSION_TRACKING_URI  # the test's own store when ``extra`` names one
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail early when the process died, and after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:5]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} did not become healthy within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, cwd: Path, timeout: float = 180):
    """`mlflow models serve` of ``model_uri`` on a free loopback port, without pickle; yields its /invocations URL."""
    port, log = free_port(), cwd / "serve.log"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                                env=venv_env(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false"))  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=timeout, log=log)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Terminate the process group started for ``proc`` (the server and its workers), then kill."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real tracking + registry server with proxied artifacts on a free port; always terminated."""
    root.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}", "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    with open(log, "wb") as out:
        # server-side job execution (a runner plus several consumer processes) is not used here
        env = venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_healthy(f"{uri}/health", proc, timeout=180, log=log)
        yield uri
    finally:
        stop(proc)


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """Point this process (and MLflow's globals) at ``uri``; restore everything afterwards."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def make_generator(prepared: Path, fit_steps: int, arch: str = "mlp", seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """A conditional G for the 8x8 digits; ``fit_steps > 0`` regresses it onto real images of the asked class.

    The fit (MSE to a random real image of class y) drives G towards the class means:
    blurry digits, but far closer to the data than a random initialisation. The MLP
    fits them in a second; the unfitted ("bad") generator is a DCGAN so that both
    kinds of network go through the registry.
    """
    from gan.data import load_split, read_manifest
    from gan.models import build_G

    x, y = load_split(prepared, "train")
    manifest = read_manifest(prepared)
    K = int(manifest["num_classes"])
    if arch == "mlp":
        G_kwargs = {"z_dim": Z_DIM, "width": 32, "num_classes": K, "out_shape": [1, IMAGE_SIZE, IMAGE_SIZE]}
    else:
        G_kwargs = {"z_dim": Z_DIM, "width": 16, "num_classes": K, "channels": 1, "image_size": IMAGE_SIZE}
    torch.manual_seed(seed)
    G = build_G(arch, **G_kwargs)
    if fit_steps:
        opt = torch.optim.Adam(G.parameters(), lr=1e-2)
        rng = np.random.default_rng(seed)
        for _ in range(fit_steps):
            idx = rng.integers(0, len(x), 64)
            xb, yb = torch.as_tensor(np.asarray(x[idx])), torch.as_tensor(np.asarray(y[idx]))
            loss = torch.nn.functional.mse_loss(G(torch.randn(64, Z_DIM), yb), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    spec = {"arch": arch, "G_kwargs": G_kwargs, "z_dim": Z_DIM, "num_classes": K, "class_names": manifest["class_names"],
            "channels": 1, "image_size": IMAGE_SIZE, "data_hash": manifest["hash"], "train": {"lr_G": 0.01},
            "model": {"arch": arch}, "tuned": {"source": "test"}}  # fmt: skip
    return G.eval(), spec


def export_and_evaluate(root: Path, name: str, G, spec, prepared: Path, features: Path, params: Path) -> tuple[Path, Path]:
    """models/<name>/ via save_generator and eval/<name>/ via the real evaluate stage."""
    from gan.export import save_generator
    from gan.stages import evaluate

    model_dir, eval_dir = root / "models" / name, root / "eval" / name
    save_generator(G, spec, model_dir)
    argv = ["--params", str(params), "--data", str(prepared), "--model", str(model_dir), "--features", str(features), "--out", str(eval_dir)]
    assert evaluate.main(argv) == 0
    return model_dir, eval_dir


def register(params: Path, model_dir: Path, eval_dir: Path, prepared: Path, features: Path, out: Path) -> dict:
    """Run the register stage and return registry/decision.json."""
    from gan.stages import register as register_stage

    argv = ["--params", str(params), "--data", str(prepared), "--model", str(model_dir), "--features", str(features),
            "--eval", str(eval_dir), "--tuned", str(out.parent / "absent.json"), "--out", str(out)]  # fmt: skip
    assert register_stage.main(argv) == 0
    return json.loads(out.read_text())


# ---------------------------------------------------------------- the shared world


@pytest.fixture(scope="module")
def world(tmp_path_factory, prepared_digits, featurized_digits):
    """bad (v1), good (v2), another bad (v3) registered on one real server, then good again
    (identical weights: no v4); yields paths and decisions."""
    root = tmp_path_factory.mktemp("registry")
    params = write_params(root / "params.yaml", register={"model_name": MODEL, "eval_samples": 300, "min_improvement": 0.05})
    bad, bad_spec = make_generator(prepared_digits, fit_steps=0, arch="dcgan")
    good, good_spec = make_generator(prepared_digits, fit_steps=150)
    bad2, bad2_spec = make_generator(prepared_digits, fit_steps=0, arch="dcgan", seed=1)
    with mlflow_server(root / "server") as uri, tracking(uri):
        bad_dir, bad_eval = export_and_evaluate(root, "bad", bad, bad_spec, prepared_digits, featurized_digits, params)
        good_dir, good_eval = export_and_evaluate(root, "good", good, good_spec, prepared_digits, featurized_digits, params)
        bad2_dir, bad2_eval = export_and_evaluate(root, "bad2", bad2, bad2_spec, prepared_digits, featurized_digits, params)
        runs = [(bad_dir, bad_eval), (good_dir, good_eval), (bad2_dir, bad2_eval), (good_dir, good_eval)]
        decisions = [
            register(params, model_dir, eval_dir, prepared_digits, featurized_digits, root / f"registry{i}" / "decision.json")
            for i, (model_dir, eval_dir) in enumerate(runs, start=1)
        ]
        yield {"uri": uri, "root": root, "params": params, "decisions": decisions, "prepared": prepared_digits,
               "features": featurized_digits, "good_dir": good_dir, "good_eval": good_eval, "bad_dir": bad_dir}  # fmt: skip


# ---------------------------------------------------------------- gated promotion


def test_register_twice_better_becomes_champion_worse_stays_challenger(world):
    from mlflow import MlflowClient

    first, better, worse, again = world["decisions"]
    # the fitted generator really is better on this evaluation, by far more than min_improvement
    assert better["challenger_score"] < 0.5 * first["challenger_score"]

    assert (first["challenger_version"], first["promoted"], first["champion_version"]) == ("1", True, None)
    assert first["reason"].startswith("first version")
    assert (better["challenger_version"], better["promoted"], better["champion_version"]) == ("2", True, "1")
    assert (worse["challenger_version"], worse["promoted"], worse["champion_version"]) == ("3", False, "2")
    # the champion was re-scored now, from the registry: v1 scored again equals v1's own score
    assert better["champion_score"] == pytest.approx(first["challenger_score"], rel=1e-6)
    assert worse["champion_score"] == pytest.approx(better["challenger_score"], rel=1e-6)
    assert worse["challenger_score"] > better["challenger_score"]
    # the good weights once more: recognised by their hash, no v4, aliases untouched
    assert (again["duplicate_of"], again["challenger_version"], again["promoted"], again["champion_version"]) == ("2", "2", False, "2")
    assert again["alias"] == "champion" and "weights identical to v2" in again["reason"]

    client = MlflowClient()
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    assert client.get_model_version_by_alias(MODEL, "challenger").version == "3"
    assert sorted(int(mv.version) for mv in client.search_model_versions(f"name = '{MODEL}'")) == [1, 2, 3]


def test_model_version_carries_metrics_params_commit_data_hash_grid_and_decision(world, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from gan.data import read_manifest

    mv = MlflowClient().get_model_version(MODEL, "3")
    tags = mv.tags
    # a few tags per version (each is a row on the registered-model page); the rest is in the run
    assert len(tags) <= 12, sorted(tags)
    eval_metrics = json.loads((world["good_eval"].parent / "bad2" / "metrics.json").read_text())
    assert float(tags["eval/fid"]) == pytest.approx(eval_metrics["fid"])
    assert tags["data_hash"] == read_manifest(world["prepared"])["hash"]
    assert tags["git_commit"] and tags["git_commit"] == world["decisions"][2]["git_commit"]
    assert tags["decision"] == "challenger" and "champion v2" in tags["decision/reason"]
    assert float(tags["decision/challenger_score"]) == pytest.approx(world["decisions"][2]["challenger_score"])
    assert MlflowClient().get_model_version(MODEL, "2").tags["decision"] == "champion"
    # the whole configs and the whole decision are JSON files of the register run, which spans the scoring
    run = MlflowClient().get_run(mv.run_id)
    settings = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/settings.json")
    assert settings["train"] == {"lr_G": 0.01} and settings["tuned"] == {"source": "test"}
    decision = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/decision.json")
    assert decision["champion_version"] == "2" and decision["champion_score"] == pytest.approx(world["decisions"][2]["champion_score"])
    assert run.info.status == "FINISHED" and run.info.end_time > run.info.start_time
    assert run.data.tags["mlflow.source.name"] == "pipelines/register.py" and run.data.params["train.lr_G"] == "0.01"
    # the sample grid travels inside the model version itself
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/3", dst_path=str(tmp_path)))
    assert (local / "artifacts" / "samples.png").read_bytes() == (world["good_eval"].parent / "bad2" / "samples.png").read_bytes()
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("python_model*"))  # nothing pickled


def test_a_new_output_schema_is_refused_unless_opted_in(prepared_digits, tmp_path):
    """A 16x16 challenger under an 8x8 champion's name: one sentence naming register.model_name, nothing registered."""
    from mlflow import MlflowClient

    from gan.export import save_generator
    from gan.models import build_G
    from gan.registry import register_generator

    small, spec = make_generator(prepared_digits, fit_steps=0)
    save_generator(small, spec, tmp_path / "small")
    G_kwargs = {**spec["G_kwargs"], "out_shape": [1, 16, 16]}
    save_generator(build_G("mlp", **G_kwargs).eval(), {**spec, "G_kwargs": G_kwargs, "image_size": 16}, tmp_path / "large")
    manifest16 = {"channels": 1, "image_size": 16, "num_classes": spec["num_classes"]}
    kw = dict(metric="fid", min_improvement=0.0, score=lambda model: 1.0, params={}, metrics={}, tags={})
    with tracking(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        register_generator(tmp_path / "small", "schema-gan", manifest={**manifest16, "image_size": 8}, **kw)
        with pytest.raises(GanError) as err:
            register_generator(tmp_path / "large", "schema-gan", manifest=manifest16, **kw)
        assert sorted(str(mv.version) for mv in MlflowClient().search_model_versions("name = 'schema-gan'")) == ["1"]
        decision, version = register_generator(tmp_path / "large", "schema-gan", manifest=manifest16, allow_schema_change=True, **kw)
    message = str(err.value)
    assert "image_size 8 -> 16" in message and "register.model_name" in message and "register.allow_schema_change" in message
    assert message.count(". ") == 0 and message.endswith(".") and "\n" not in message
    assert decision.promoted and str(version.version) == "2"


# ---------------------------------------------------------------- loading without the training code


FRESH_LOAD = textwrap.dedent(
    """
    import json, sys
    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model(sys.argv[1])
    out = model.predict(pd.DataFrame([{"n": 12, "labels": [3, 5], "seed": 7}]))
    gan_files = {k: getattr(m, "__file__", None) for k, m in sys.modules.items() if k == "gan" or k.startswith("gan.")}
    print(json.dumps({
        "shape": list(out["images"].shape), "dtype": str(out["images"].dtype), "labels": out["labels"].tolist(),
        "sum": int(out["images"].astype("int64").sum()), "gan_files": gan_files,
        "loaded": sorted(k for k in sys.modules if k.split(".")[0] in ("ray", "dvc", "optuna") or k.startswith(("gan.training", "gan.data", "gan.losses", "gan.tuning", "gan.evaluation", "gan.features"))),
    }))
    """
)


def test_champion_loads_in_a_fresh_process_without_training_code(world, tmp_path):
    env = venv_env(MLFLOW_TRACKING_URI=world["uri"], MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", FRESH_LOAD, f"models:/{MODEL}@champion"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["shape"] == [12, 1, IMAGE_SIZE, IMAGE_SIZE] and got["dtype"] == "uint8"
    assert got["labels"] == [3, 5] * 6
    assert got["loaded"] == []  # no training, data, tuning or evaluation code was imported
    # every gan module came from the code stored with the model version, none from this checkout
    assert {"gan", "gan.export", "gan.models", "gan.models.mlp", "gan.models.dcgan"} <= set(got["gan_files"])
    project = str(ROOT / "gan")
    assert all(f and not f.startswith(project) and "/code/gan/" in f for f in got["gan_files"].values()), got["gan_files"]
    # and it is the same model as in this process
    import mlflow

    here = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(pd.DataFrame([{"n": 12, "labels": [3, 5], "seed": 7}]))
    assert int(here["images"].astype("int64").sum()) == got["sum"]


def test_model_code_is_the_model_definitions_only():
    from gan.registry import model_code_files

    files = {str(p) for p in model_code_files()}
    assert {"__init__.py", "export.py", "mlflow_model.py", "models/__init__.py", "models/dcgan.py"} <= files
    assert not any(f.startswith(("training/", "data/", "metrics/")) or f in ("losses.py", "tuning.py", "registry.py") for f in files)


def test_model_code_closure_refuses_training_imports(tmp_path):
    from gan.registry import model_code_files

    src = tmp_path / "gan"
    (src / "models").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "mlflow_model.py").write_text("from gan.models import build_G\n")
    # imports only for type checkers never run, so they do not count
    (src / "models" / "__init__.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gan.config import ModelConfig\n")
    assert [str(p) for p in model_code_files(src)] == ["__init__.py", "mlflow_model.py", "models/__init__.py"]
    (src / "models" / "__init__.py").write_text("def build_G():\n    from gan.training.loop import step\n")
    with pytest.raises(GanError, match="gan.training"):
        model_code_files(src)


# ---------------------------------------------------------------- the pyfunc contract


def test_pyfunc_signature_example_determinism_and_latent_input(world, tmp_path):
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = f"models:/{MODEL}/2"
    info = mlflow.models.get_model_info(uri)
    # outputs only: an input schema would let MLflow drop unknown fields and cast n = 2.5 to 2
    assert info.signature.inputs is None
    assert info.signature.outputs.input_names() == ["images", "labels", "class_names"]
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path)))
    assert (local / "input_example.json").exists() and (local / "serving_input_example.json").exists()

    model = mlflow.pyfunc.load_model(uri)
    a = model.predict(pd.DataFrame([{"n": 30, "labels": [1], "seed": 4}]))
    b = model.predict(pd.DataFrame([{"n": 10, "labels": [1], "seed": 4}]))
    assert np.array_equal(a["images"][:10], b["images"])  # the first k samples do not depend on n
    assert (a["labels"] == 1).all() and a["images"].dtype == np.uint8
    c = model.predict(pd.DataFrame([{"n": 30, "labels": [1], "seed": 5}]))
    assert not np.array_equal(a["images"], c["images"])
    # two request rows are answered in order
    both = model.predict(pd.DataFrame([{"n": 2, "labels": [0], "seed": 1}, {"n": 3, "labels": [9], "seed": 2}]))
    assert both["labels"].tolist() == [0, 0, 9, 9, 9]
    # a latent batch gives exactly G(z, y) in uint8
    z = np.random.default_rng(0).standard_normal((4, Z_DIM))
    out = model.predict(pd.DataFrame([{"z": z.tolist(), "labels": [2, 3, 4, 5]}]))
    G = model.unwrap_python_model().G
    with torch.no_grad():
        ref = G(torch.as_tensor(z, dtype=torch.float32), torch.tensor([2, 3, 4, 5]))
    assert np.abs(out["images"].astype(int) - ((ref + 1) * 127.5).round().clamp(0, 255).numpy().astype(int)).max() <= 1
    for bad, match in [({"n": 3, "labels": [10]}, "label 10"), ({"n": 0}, "n = 0"), ({"n": 10**6}, "more than"), ({"n": 2, "truncation": -1.0}, "truncation")]:
        with pytest.raises(MlflowException, match=match):
            model.predict(pd.DataFrame([bad]))


# ---------------------------------------------------------------- serving over HTTP


def test_models_serve_answers_invocations(world, tmp_path):
    with model_server(f"models:/{MODEL}@champion", world["uri"], tmp_path) as url:
        r = requests.post(url, json={"dataframe_records": [{"n": 6, "labels": [7], "seed": 3}]}, timeout=60)
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"]
        images = np.asarray(pred["images"], dtype=np.uint8)
        assert images.shape == (6, 1, IMAGE_SIZE, IMAGE_SIZE) and pred["labels"] == [7] * 6
        import mlflow

        local = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(pd.DataFrame([{"n": 6, "labels": [7], "seed": 3}]))
        assert np.array_equal(images, local["images"])  # the champion (v2), same samples as in-process
        assert pred["class_names"] == ["7"] * 6
        # the whole request is checked as sent, before MLflow could drop or cast a field
        for body, message in [
            ({"dataframe_records": [{"n": 2, "labels": [42]}]}, "label 42 is unknown"),
            ({"dataframe_records": [{"n": 2.5}]}, "n = 2.5 is invalid"),
            ({"dataframe_records": [{"n": 2**63}]}, "n = 9223372036854775808 is more than one request may ask for"),
            ({"dataframe_records": [{"n": 6000}, {"n": 6000}]}, "the 2 rows ask for 12000 samples"),
            ({"dataframe_records": [{"n": 2, "lables": [3]}]}, "unknown field 'lables'"),
            ({"dataframe_records": [{"n": 2, "labels": [1, 2, 3]}]}, "labels has 3 entries for 2 samples"),
        ]:
            r = requests.post(url, json=body, timeout=60)
            assert r.status_code == 400 and message in r.json()["message"], (body, r.text)
        r = requests.post(url, json={"inputs": {"n": 2, "labels": ["3"]}}, timeout=60)  # the tensor-style format, a class name
        assert r.status_code == 200 and r.json()["predictions"]["labels"] == [3, 3], r.text


# ---------------------------------------------------------------- bad input


def test_unknown_model_name_or_alias(world):
    from gan.registry import resolve_model

    with pytest.raises(GanError, match="registered model 'no-such-gan' does not exist"):
        resolve_model("models:/no-such-gan@champion")
    with pytest.raises(GanError, match="has no alias 'best'.*challenger, champion"):
        resolve_model(f"models:/{MODEL}@best")
    with pytest.raises(GanError, match="has no version 99"):
        resolve_model(f"models:/{MODEL}/99")
    with pytest.raises(GanError, match="not a registry URI"):
        resolve_model("runs:/abc/model")
    assert resolve_model(f"models:/{MODEL}@champion").version == "2"


def test_diverged_generator_is_not_registered(world, tmp_path):
    from mlflow import MlflowClient

    from gan.stages import register as register_stage

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    metrics = json.loads((world["good_eval"] / "metrics.json").read_text())
    (eval_dir / "metrics.json").write_text(json.dumps({**metrics, "fid": float("nan")}))
    (eval_dir / "samples.png").write_bytes((world["good_eval"] / "samples.png").read_bytes())
    out = tmp_path / "registry" / "decision.json"
    argv = ["--params", str(world["params"]), "--data", str(world["prepared"]), "--model", str(world["good_dir"]),
            "--features", str(world["features"]), "--eval", str(eval_dir), "--out", str(out)]  # fmt: skip
    with pytest.raises(GanError, match="fid = nan is not a finite number"):
        register_stage.main(argv)
    assert not out.exists() and not out.parent.exists()
    assert len(MlflowClient().search_model_versions(f"name='{MODEL}'")) == 3


def test_unreachable_tracking_server_fails_fast_and_writes_nothing(world, tmp_path):
    from gan.stages import register as register_stage

    out = tmp_path / "registry" / "decision.json"
    dead = f"http://127.0.0.1:{free_port()}"
    argv = ["--params", str(world["params"]), "--data", str(world["prepared"]), "--model", str(world["good_dir"]),
            "--features", str(world["features"]), "--eval", str(world["good_eval"]), "--out", str(out)]  # fmt: skip
    start = time.monotonic()
    with tracking(dead), pytest.raises(GanError, match=r"MLflow tracking server http://127.0.0.1:\d+ is not reachable"):
        register_stage.main(argv)
    assert time.monotonic() - start < 60
    assert not out.parent.exists()


def test_decide_threshold_is_relative_and_sign_safe():
    from gan.registry import decide, threshold

    assert threshold(10.0, 0.1) == pytest.approx(9.0)
    assert threshold(-0.01, 0.5) == pytest.approx(-0.015)  # KID can be slightly negative
    assert decide("fid", "2", 8.9, "1", 10.0, 0.1).promoted
    assert not decide("fid", "2", 9.0, "1", 10.0, 0.1).promoted
    assert not decide("fid", "2", float("nan"), None, None, 0.0).promoted
    assert decide("fid", "2", 50.0, "1", 10.0, 0.0, champion_unusable="shape changed").promoted
