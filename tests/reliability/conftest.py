"""Helpers for the reliability suite: stage subprocesses, small filesystems, Ray processes.

The session fixtures of tests/conftest.py (``ray_cluster``, ``prepared_digits``,
``featurized_digits``, ``mlflow_sqlite``) are shared with the rest of the suite; the
registry and server helpers come from tests/test_registry.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import ROOT, SESSION_TRACKING_URI

STAGES = ROOT / "pipelines"


@pytest.fixture
def ray_default_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train polls its workers every 2 s (Ray's default) instead of the product's 0.5 s.

    Each checkpoint's report waits for the next poll, so the wide window keeps a run going
    long enough after a checkpoint for a fault (a SIGKILL, a lost node, a stopped server)
    to land mid-run on a busy machine.
    """
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a stage or CLI subprocess: this interpreter's bin first, the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = SESSION_TRACKING_URI  # the test's own store when ``extra`` names one
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_stage(script: str | list[str], *args: str, cwd: Path | None = None, timeout: float = 300, preexec_fn=None, **env: str) -> subprocess.CompletedProcess:
    """Run ``pipelines/<script>.py`` (or ``[-m, module]``) with ``args``; capture its output."""
    head = [str(STAGES / f"{script}.py")] if isinstance(script, str) else list(script)
    return subprocess.run([sys.executable, *head, *args], cwd=cwd or ROOT, env=child_env(**env), capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, ray_logs: bool = False) -> str:
    """The process failed with exactly one ``error: ...`` line on stderr naming ``needles``; return it.

    ``ray_logs``: the train stage streams Ray's worker output to the console (for its
    progress lines), and Ray prints the tracebacks of workers that died; then the
    stage's own sentence must be the last line instead of the only one.
    """
    assert proc.returncode != 0, f"exit 0:\n{proc.stdout[-2000:]}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if ray_logs:
        assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    else:
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    line = errors[0]
    assert line.endswith("."), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> bytes), hidden ones included."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders the atomic writers left behind in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name) if folder.exists() else []


def _run(*cmd: str) -> bool:
    return subprocess.run(list(cmd), capture_output=True).returncode == 0


def _mount(*args: str) -> bool:
    return _run("mount", *args)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``path`` (a full disk on demand); skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the RLIMIT_FSIZE case covers a full disk here")
    try:
        yield path
    finally:
        if not _run("umount", str(path)):
            _run("umount", "-l", str(path))


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """``path`` bind-mounted onto itself read-only (chmod does not stop root); skipped without mount rights."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not _mount("--bind", str(path), str(path)):
        pytest.skip("a read-only bind mount needs root (CAP_SYS_ADMIN)")
    try:
        if not _mount("-o", "remount,bind,ro", str(path)):
            pytest.skip("remounting read-only is not allowed here")
        yield path
    finally:
        if not _run("umount", str(path)):
            _run("umount", "-l", str(path))


def raylet_pid() -> int:
    """The PID of this driver's local raylet (the session cluster started by ``ray_cluster``)."""
    import ray

    node = ray._private.worker._global_node  # the node this process started
    return node.all_processes["raylet"][0].process.pid


def ray_processes(root_pid: int, title: str) -> list[int]:
    """PIDs of Ray worker processes under ``root_pid`` whose process title starts with ``ray::<title>``.

    Looking only below our own raylet keeps other Ray clusters on the machine out of reach.
    """
    import psutil

    found = []
    for proc in psutil.Process(root_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = proc.cmdline()
            if cmd and cmd[0].startswith(f"ray::{title}"):
                found.append(proc.pid)
    return found


# ---------------------------------------------------------------- a small registry (SQLite)

MODEL = "rel-gan"


@pytest.fixture(scope="session")
def small_registry(tmp_path_factory, prepared_digits) -> dict:
    """A SQLite registry: ``rel-gan`` v1 (fitted MLP, champion) and v2 (random DCGAN), exported dirs kept.

    Only the creation runs with MLflow pointed at the store; tests point at ``uri`` themselves.
    """
    from mlflow import MlflowClient

    from gan.export import save_generator
    from gan.registry import log_generator

    from ..test_registry import make_generator, tracking

    root = tmp_path_factory.mktemp("rel-registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    good, spec = make_generator(prepared_digits, fit_steps=150)
    bad, bad_spec = make_generator(prepared_digits, fit_steps=0, arch="dcgan")
    save_generator(good, spec, root / "good")
    save_generator(bad, bad_spec, root / "bad")
    with tracking(uri):
        for name in ("good", "bad"):
            log_generator(root / name, MODEL, params={"p": 1}, metrics={"eval/fid": 1.0}, tags={"git_commit": "test"})
        MlflowClient().set_registered_model_alias(MODEL, "champion", "1")
    return {"uri": uri, "root": root, "model": MODEL, "good": root / "good", "bad": root / "bad"}
