"""``gan repro``: ``dvc repro`` with one local Ray shared by every Ray stage of the run.

    gan repro                 # what `make repro` runs: the whole pipeline
    gan repro train -f        # any `dvc repro` arguments pass through
    RAY_ADDRESS=<head>:6379 gan repro   # a cluster given by the user is used as it is

Run on its own, each Ray stage (tune, train) starts a private local Ray and pays Ray's
start-up every time: the GCS and raylet, and Ray Train's detached helper actors, which
live as long as the cluster does. Here one local Ray is started before ``dvc repro``,
every stage joins it through ``RAY_ADDRESS``, and it is stopped, alone, when ``dvc
repro`` ends (docs/benchmarks.md, "Start-up", has the before and after). When ``dvc
status`` finds nothing to run, no Ray is started: a no-op repro stays a DVC no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from gan.errors import GanError
from gan.ray_session import pipeline_cluster, run_child


def dvc_command() -> list[str]:
    """``dvc`` beside this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    found = str(beside) if beside.exists() else shutil.which("dvc")
    if found is None:
        raise GanError("dvc is not installed in this environment; run `make install` (or pip install dvc) and try again.")
    return [found]


def up_to_date(cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> bool:
    """Whether ``dvc status`` finds every stage up to date (its exit status 0 with ``--quiet``)."""
    proc = subprocess.run([*dvc_command(), "status", "--quiet"], cwd=cwd, env=env, capture_output=True)
    return proc.returncode == 0


@contextlib.contextmanager
def repro_cluster(args: list[str], cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Iterator[str | None]:
    """One Ray for a ``dvc repro ARGS`` (:func:`gan.ray_session.pipeline_cluster`); None when a
    bare repro would run nothing (with targets or flags, what runs is DVC's to decide)."""
    if not args and up_to_date(cwd, env):
        yield None
        return
    with pipeline_cluster() as address:
        yield address


def cli_main(argv: list[str] | None = None) -> int:
    """Run ``dvc repro ARGS`` on one local Ray (or on ``RAY_ADDRESS``); exit with dvc's status."""
    parser = argparse.ArgumentParser(prog="gan repro", description=__doc__.splitlines()[0],
                                     epilog="Every other argument goes to dvc repro unchanged.")  # fmt: skip
    _, rest = parser.parse_known_args(argv)
    if not rest and not Path("dvc.yaml").exists():
        raise GanError(f"{Path.cwd()} has no dvc.yaml; run gan repro in the project's directory (where make repro runs).")
    cmd = [*dvc_command(), "repro", *rest]
    with repro_cluster(rest) as address:
        if address:
            print(f"repro: every Ray stage of this run uses the Ray at {address}", flush=True)
        return run_child(cmd)
