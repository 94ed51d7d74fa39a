"""Scheduled retraining: new data -> ``dvc repro`` -> gated promotion, one summary line.

    gan retrain                 # or: make retrain
    gan retrain --wait 3600     # wait up to an hour for a retrain already running

Steps:
1. take the project's retrain lock (``.retrain.lock``); a second retrain started
   meanwhile waits ``--wait`` seconds, then exits 75 with a clear message;
2. bring in new raw data: ``dvc update`` for every import under ``data/raw`` and
   ``dvc pull`` when a DVC remote is configured (a changed ``data/raw`` directory is
   picked up by ``dvc repro`` itself, since it is a dependency of ``prepare``);
3. ``dvc repro`` (full log in ``logs/retrain-<time>.log``);
4. read ``registry/decision.json`` and print one line: promoted or kept.

Exit status 0 whether or not a new champion was promoted; non-zero only when a
step failed (its last error line is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from gan.errors import GanError
from gan.tracking import repo_root

LOCK = ".retrain.lock"
BUSY_EXIT = 75  # EX_TEMPFAIL: try again later


def _run(cmd: list[str], cwd: Path, log) -> subprocess.CompletedProcess:
    """Run ``cmd`` with output appended to ``log``; raise GanError with its last error line."""
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(proc.stdout)
    log.flush()
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        last = (errors or lines or ["no output"])[-1].strip()
        raise GanError(f"'{' '.join(cmd)}' failed ({last}); full log in {log.name}.")
    return proc


def raw_imports(root: Path) -> list[Path]:
    """``.dvc`` files under data/raw that import from another repo or URL (``dvc update`` targets)."""
    import yaml

    found = []
    for f in sorted((root / "data" / "raw").rglob("*.dvc")):
        spec = yaml.safe_load(f.read_text()) or {}
        if spec.get("deps"):
            found.append(f)
    return found


def has_remote(root: Path, log) -> bool:
    return bool(_run(["dvc", "remote", "list"], root, log).stdout.strip())


def summary(root: Path, repro_output: str) -> str:
    """One line from registry/decision.json (or that nothing changed)."""
    path = root / "registry" / "decision.json"
    if not path.exists():
        return "retrain: pipeline ran but registry/decision.json is missing; check the register stage."
    d = json.loads(path.read_text())
    metric = d.get("metric", "score")
    ran_register = "Running stage 'register'" in repro_output
    if not ran_register:
        return f"retrain: nothing changed; champion {d.get('model_name')} v{d.get('champion_version')} stays."
    ch, champ = d.get("challenger_score"), d.get("champion_score")
    if d.get("promoted"):
        before = f", was {champ:.4g}" if isinstance(champ, int | float) else " (first version)"
        return f"retrain: promoted {d.get('model_name')} v{d.get('version')} to champion ({metric} {ch:.4g}{before})."
    return (
        f"retrain: kept champion v{d.get('champion_version')} ({metric} {champ:.4g}); "
        f"challenger v{d.get('version')} scored {ch:.4g}, not better by {d.get('min_improvement', 0):.0%}."
    )


def retrain(root: Path, wait: float, pull: bool = True) -> str:
    """Run the whole retrain under the lock; return the summary line."""
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    lock = FileLock(str(root / LOCK))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise GanError(f"another retrain holds {root / LOCK}; this one exits without touching anything (use --wait SECONDS to queue).") from None
    try:
        with open(logs / f"retrain-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log", "w") as log:
            if pull:
                for target in raw_imports(root):
                    _run(["dvc", "update", str(target.relative_to(root))], root, log)
                if has_remote(root, log):
                    _run(["dvc", "pull", "--allow-missing"], root, log)
            out = _run(["dvc", "repro"], root, log).stdout
        return summary(root, out)
    finally:
        lock.release()


def cli_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gan retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a retrain already running (default 0)")
    parser.add_argument("--no-pull", action="store_true", help="skip dvc update/pull of raw data")
    parser.add_argument("--repo", default=None, help="project root (default: found from the working directory)")
    args = parser.parse_args(argv)
    root = Path(args.repo).resolve() if args.repo else repo_root()
    try:
        line = retrain(root, args.wait, pull=not args.no_pull)
    except GanError as err:
        if "another retrain holds" in str(err):
            print(f"error: {err}", file=sys.stderr)
            return BUSY_EXIT
        raise
    print(line)
    return 0
