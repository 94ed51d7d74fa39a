"""Benchmark: a no-op ``dvc repro`` of this project's pipeline against DVC's own floor.

    python bench/dvc_noop.py                    # builds and reproduces the tiny pipeline first (1-3 min)
    python bench/dvc_noop.py --repo /tmp/x      # reuse a repo made by tests/pipeline_repo.py and reproduced
    python bench/dvc_noop.py --rounds 9

In one run:

- this project's seven-stage pipeline, copied into a fresh git + DVC repo with the tiny
  params of tests/pipeline_repo.py and reproduced once, so that nothing has changed;
- the floor: a trivial two-stage pipeline (``cp in.txt mid.txt``, ``cp mid.txt out.txt``,
  cached outputs) in another fresh repo, reproduced once;
- for comparison, the project's pipeline with each stage's gan/ deps collapsed into one
  ``gan`` dep (same stages, params and outputs; lock updated by ``dvc commit``);
- ``dvc repro`` in each, alternated for ``--rounds`` rounds (each must run no stage),
  wall time of the whole command as a user sees it (interpreter start included).

Reports the medians and their ratio (target: <= 1.3x) and, to tell where the time goes,
the same for ``dvc status``. Writes bench/results/dvc_noop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pipeline_repo import BIN, dvc, env_for, git, make_pipeline_repo, ran  # noqa: E402

FLOOR_DVC_YAML = """\
stages:
  one:
    cmd: cp in.txt mid.txt
    deps: [in.txt]
    outs: [mid.txt]
  two:
    cmd: cp mid.txt out.txt
    deps: [mid.txt]
    outs: [out.txt]
"""


def floor_repo(root: Path) -> Path:
    """A fresh git + DVC repo with the trivial two-stage pipeline, reproduced once."""
    root.mkdir(parents=True)
    (root / "in.txt").write_text("hello\n")
    (root / "dvc.yaml").write_text(FLOOR_DVC_YAML)
    git(root, "init", "-q")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "bench")
    dvc(root, "init", "-q")
    dvc(root, "repro")
    return root


def coarse_copy(project: Path, dest: Path) -> Path:
    """``project`` with each stage's gan/ deps replaced by one ``gan`` dep, lock updated
    without running anything (``dvc commit``): how much of the no-op is the deps' count."""
    import shutil

    import yaml

    shutil.copytree(project, dest, symlinks=True)
    spec = yaml.safe_load((dest / "dvc.yaml").read_text())
    for stage in spec["stages"].values():
        stage["deps"] = [d for d in stage["deps"] if not d.startswith("gan/")] + ["gan"]
    (dest / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    dvc(dest, "commit", "-f", "-q")
    return dest


def timed(repo: Path, *args: str) -> tuple[float, str]:
    """Wall seconds of ``dvc <args>`` in ``repo`` and its output."""
    start = time.perf_counter()
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env_for(repo), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed in {repo}: {proc.stderr.strip().splitlines()[-1:]}")
    return seconds, proc.stdout + proc.stderr


def measure(repos: dict[str, Path], args: tuple[str, ...], rounds: int) -> dict[str, list[float]]:
    """Alternate ``dvc <args>`` over ``repos`` for ``rounds`` rounds (one unmeasured warm-up each)."""
    times: dict[str, list[float]] = {name: [] for name in repos}
    for repo in repos.values():
        timed(repo, *args)  # warm the page cache and DVC's state database
    for _ in range(rounds):
        for name, repo in repos.items():
            seconds, out = timed(repo, *args)
            if args[0] == "repro" and ran(out):
                raise SystemExit(f"dvc repro in {repo} ran {sorted(ran(out))}: not a no-op; check that nothing changes the repo.")
            times[name].append(seconds)
    return times


def dep_count(repo: Path) -> int:
    import yaml

    return sum(len(stage["deps"]) for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=None, help="an already reproduced pipeline repo (default: build one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dvc-noop-") as tmp:
        if args.repo is None:
            print("building and reproducing the tiny pipeline (1-3 min) ...", flush=True)
            start = time.perf_counter()
            project = make_pipeline_repo(Path(tmp) / "project")
            dvc(project, "repro")
            print(f"  first dvc repro: {time.perf_counter() - start:.0f} s", flush=True)
        else:
            project = args.repo.resolve()
        repos = {"project": project, "coarse": coarse_copy(project, Path(tmp) / "coarse"), "floor": floor_repo(Path(tmp) / "floor")}
        repro = measure(repos, ("repro",), args.rounds)
        status = measure(repos, ("status",), args.rounds)
        deps = {name: dep_count(repos[name]) for name in ("project", "coarse")}

    def med(xs: list[float]) -> float:
        return round(statistics.median(xs), 3)

    result = {
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, shared with other jobs; load average {os.getloadavg()[0]:.1f} at the end",
        "python": platform.python_version(),
        "dvc": subprocess.run([str(BIN / "dvc"), "--version"], capture_output=True, text=True).stdout.strip(),
        "rounds": args.rounds,
        "repro_s": {name: med(xs) for name, xs in repro.items()},
        "repro_all_s": {name: [round(x, 3) for x in xs] for name, xs in repro.items()},
        "repro_ratio": round(statistics.median(repro["project"]) / statistics.median(repro["floor"]), 2),
        "status_s": {name: med(xs) for name, xs in status.items()},
        "status_ratio": round(statistics.median(status["project"]) / statistics.median(status["floor"]), 2),
        "coarse_repro_ratio": round(statistics.median(repro["coarse"]) / statistics.median(repro["floor"]), 2),
        "deps": deps,
        "target_ratio": 1.3,
    }
    print(f"{'no-op command':<14}{'project':>10}{'coarse deps':>13}{'floor':>9}{'ratio':>8}")
    for cmd in ("repro", "status"):
        s = result[f"{cmd}_s"]
        print(f"{'dvc ' + cmd:<14}{s['project']:>9.3f}s{s['coarse']:>12.3f}s{s['floor']:>8.3f}s{result[f'{cmd}_ratio']:>7.2f}x")
    print("project: the 7 stages with exact deps; coarse deps: the same with one gan/ dep per stage; floor: 2 cp stages")
    out = ROOT / "bench" / "results" / "dvc_noop.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out.relative_to(ROOT)} (target ratio <= {result['target_ratio']})")


if __name__ == "__main__":
    main()
