"""Benchmark: the fixed start-up of the Ray stages, before and after one Ray per pipeline run.

    python bench/startup.py                       # 3 rounds of the train stage, baseline = HEAD
    python bench/startup.py --baseline 3c514f6    # the code before the change as the baseline
    python bench/startup.py --repro               # also the default `make repro` wall time, both ways

In one run, on the project's default params.yaml (its train section cut to ``--steps``
steps with one FID evaluation), each in its own fresh copy of the project (git + DVC,
data prepared and the feature network trained once by ``dvc repro featurize``), the train
stage (``python pipelines/train.py --fresh``) as ``dvc repro`` runs it, alternated for
``--rounds`` rounds:

- **before**: the baseline revision's code, the stage starting its own local Ray (how
  every Ray stage started before ``gan repro``);
- **own Ray**: this tree's code, the stage starting its own local Ray (``dvc repro`` run
  bare, or a single stage run by hand);
- **shared Ray**: this tree's code, the stage joining the one local Ray that ``gan repro``
  starts for the whole run (``RAY_ADDRESS``), after one earlier stage on it, as the
  train stage follows tune in the pipeline.

Per run: the stage's wall time as a user sees it (interpreter start to exit, the start
taken from ``/proc``); from the stage's ``main()`` to ``TorchTrainer.fit()`` (Ray started
or joined, data and MLflow checked); from ``fit()`` to the first training step done (the
"time to first step after a warm Ray"); and the sum, ``main()`` to first step. As the
machine's yardstick, the wall time of ``python -c "import torch"``, which every new Ray
worker process pays. ``--repro`` adds one default ``make repro`` (every stage, default
params) each way: ``dvc repro`` on the baseline's code, ``gan repro`` on this tree's.
Writes bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.pipeline_repo import copy_project  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results" / "startup.json"
COPIED = ("gan", "pipelines", "data/raw", "dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")


def sh(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def env_for(repo: Path) -> dict[str, str]:
    """The copy's own gan/ first, its own MLflow file, no cluster given (as ``make repro`` runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(repo),
               MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}", DVC_NO_ANALYTICS="1", GIT_PYTHON_REFRESH="quiet")  # fmt: skip
    return env


def copy_tree(rev: str | None, repo: Path, train: dict[str, Any] | None) -> Path:
    """The project's pipeline at ``rev`` (None: this working tree) as a fresh git + DVC repo."""
    if rev is None:
        copy_project(repo, COPIED)
    else:
        repo.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev, *COPIED], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
    if train:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["train"].update(train)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = env_for(repo)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@example.com"], ["git", "config", "user.name", "bench"],
                [str(BIN / "dvc"), "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "pipeline"]):  # fmt: skip
        sh(cmd, repo, env)
    return repo


def process_start(pid: int) -> float:
    """Unix time at which process ``pid`` started (``/proc/<pid>/stat``, field 22, in clock ticks since boot)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def train_stage(repo: Path, address: str | None) -> dict[str, float]:
    """One run of the train stage in ``repo``; its wall time, and when Ray and the first step were ready."""
    env = env_for(repo)
    if address:
        env["RAY_ADDRESS"] = address
    proc = subprocess.Popen([sys.executable, "pipelines/train.py", "--fresh"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t_start = process_start(proc.pid)
    out, _ = proc.communicate()
    t_end = time.time()
    if proc.returncode:
        raise RuntimeError(f"train stage exited {proc.returncode}:\n{out[-4000:]}")
    metrics = json.loads((repo / "train" / "metrics.json").read_text())
    # the stage's own timing (train/metrics.json): wall_time_s from main() to the end of
    # training, train_time_s from fit() on, startup_s from fit() to the first step done
    before_fit = metrics["wall_time_s"] - metrics["train_time_s"]
    return {"wall_s": round(t_end - t_start, 2), "before_fit_s": round(before_fit, 2), "startup_s": metrics["startup_s"],
            "to_first_step_s": round(before_fit + metrics["startup_s"], 2)}  # fmt: skip


def import_torch_s(times: int = 3) -> float:
    """Median wall time of ``python -c "import torch"``: what every new Ray worker pays, as this machine's yardstick."""
    walls = []
    for _ in range(times):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        walls.append(time.perf_counter() - t)
    return round(statistics.median(walls), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="HEAD", help="revision whose code is 'before' (default HEAD)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="train.steps of the measured stage (one FID evaluation at the end)")
    ap.add_argument("--repro", action="store_true", help="also time one default `make repro` each way")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    from gan.ray_session import pipeline_cluster

    train = {"steps": args.steps, "eval_every": 0, "checkpoint_every": args.steps, "sample_every": args.steps}
    t_bench = time.perf_counter()
    yardstick = import_torch_s()
    print(f"python -c 'import torch': {yardstick} s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    rows: dict[str, list[dict[str, float]]] = {"before": [], "own": [], "shared": []}
    try:
        repos = {"before": copy_tree(args.baseline, tmp / "before", train), "after": copy_tree(None, tmp / "after", train)}
        for repo in repos.values():
            sh([str(BIN / "dvc"), "repro", "featurize"], repo, env_for(repo))
        os.environ.pop("RAY_ADDRESS", None)
        with pipeline_cluster() as address:
            train_stage(repos["after"], address)  # an earlier stage on the shared Ray (tune, in the pipeline)
            for r in range(args.rounds):
                for kind, repo, addr in (("before", repos["before"], None), ("own", repos["after"], None), ("shared", repos["after"], address)):
                    rows[kind].append(train_stage(repo, addr))
                    print(f"round {r}: {kind:6s} " + ", ".join(f"{k} {v:.2f}" for k, v in rows[kind][-1].items()), flush=True)
        repro: dict[str, float] = {}
        if args.repro:
            for kind, rev, cmd in (("before", args.baseline, [str(BIN / "dvc"), "repro"]), ("after", None, [str(BIN / "gan"), "repro"])):
                repo = copy_tree(rev, tmp / f"repro-{kind}", None)
                t = time.perf_counter()
                sh(cmd, repo, env_for(repo))
                repro[kind] = round(time.perf_counter() - t, 1)
                print(f"make repro ({kind}): {repro[kind]} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    median = {k: {m: round(statistics.median(r[m] for r in v), 2) for m in v[0]} for k, v in rows.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "load_average_at_start": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d"), "baseline": args.baseline,
        "steps": args.steps, "rounds": args.rounds, "import_torch_s": yardstick, "median": median, "runs": rows, "repro_wall_s": repro,
        "bench_wall_s": round(time.perf_counter() - t_bench, 1),
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(median, indent=2))
    if repro:
        print(f"make repro: before {repro['before']} s, after {repro['after']} s")


if __name__ == "__main__":
    main()
