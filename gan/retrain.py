"""Scheduled retraining: new data -> ``dvc repro`` -> gated promotion, one summary line.

    gan retrain                 # or: make retrain
    gan retrain --wait 3600     # wait up to an hour for a retrain already running

Steps:
1. take the project's retrain lock (``.retrain.lock``); a second retrain started
   meanwhile waits ``--wait`` seconds, then exits 75 with a clear message;
2. bring in new raw data: ``dvc update`` for every import under ``data/raw`` and
   ``dvc pull`` when a DVC remote is configured (a changed ``data/raw`` directory is
   picked up by ``dvc repro`` itself, since it is a dependency of ``prepare``);
3. ``dvc repro`` on one local Ray shared by its stages (``RAY_ADDRESS``'s cluster when
   set, none when nothing is to run; :func:`gan.repro.repro_cluster`), full log in
   ``logs/retrain-<time>.log``;
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
from typing import TextIO

from filelock import FileLock, Timeout

from gan.errors import GanError
from gan.repro import repro_cluster
from gan.tracking import repo_root

LOCK = ".retrain.lock"
BUSY_EXIT = 75  # EX_TEMPFAIL: try again later


class RetrainBusy(GanError):
    """Another retrain holds the project's lock."""

    exit_code = BUSY_EXIT


def _env() -> dict[str, str]:
    """This environment with the interpreter's bin first: dvc, and the stages' ``python``,
    must be the project's even when cron runs ``.venv/bin/gan`` with a bare PATH."""
    bin_dir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def _run(cmd: list[str], cwd: Path, log: TextIO) -> str:
    """Run ``cmd`` with its output streamed into ``log``; return that output.

    Raises GanError naming the command, its last error line and the log file.
    """
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    start = os.path.getsize(log.name)
    try:
        # straight into the file, so that `tail -f logs/retrain-*.log` follows a long repro
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    except FileNotFoundError:
        raise GanError(f"'{cmd[0]}' is not installed in {os.path.dirname(sys.executable)} or on PATH; install the project (make install).") from None
    with open(log.name, "rb") as f:
        f.seek(start)
        output = f.read().decode(errors="replace")
    if proc.returncode != 0:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        last = (errors or lines or ["no output"])[-1].strip()
        raise GanError(f"'{' '.join(cmd)}' failed ({last}); full log in {log.name}.")
    return output


def raw_imports(root: Path) -> list[Path]:
    """``.dvc`` files under data/raw that import from another repo or URL (``dvc update`` targets)."""
    import yaml

    found = []
    for f in sorted((root / "data" / "raw").rglob("*.dvc")):
        spec = yaml.safe_load(f.read_text()) or {}
        if spec.get("deps"):
            found.append(f)
    return found


def import_source(dvc_file: Path) -> str:
    """Where a ``dvc import`` came from: ``<repo url> <path>`` (or the URL of a ``dvc import-url``)."""
    import yaml

    dep = (yaml.safe_load(dvc_file.read_text()) or {}).get("deps", [{}])[0]
    repo = dep.get("repo", {}).get("url")
    return f"{repo} {dep.get('path', '')}".strip() if repo else str(dep.get("path", "?"))


def update_import(root: Path, target: Path, log: TextIO) -> None:
    """``dvc update`` one import; a data registry that cannot be reached fails in one sentence.

    DVC leaves the import as it was when the update fails, so nothing has changed yet.
    """
    relative = str(target.relative_to(root))
    try:
        _run(["dvc", "update", relative], root, log)
    except GanError:
        raise GanError(
            f"the data registry behind {relative} ({import_source(target)}) cannot be reached or read, so nothing was updated "
            f"or retrained; check that the registry repository and its DVC remote are available (full log in {log.name})."
        ) from None


def has_remote(root: Path, log: TextIO) -> bool:
    """Whether the repo has a DVC remote to pull from."""
    return bool(_run(["dvc", "remote", "list"], root, log).strip())


def summary(root: Path, repro_output: str) -> str:
    """One line from registry/decision.json and the stages ``dvc repro`` ran."""
    ran = [line.split("'")[1] for line in repro_output.splitlines() if line.startswith("Running stage '")]
    path = root / "registry" / "decision.json"
    if not path.exists():
        return "retrain: the pipeline ran but registry/decision.json is missing; check the register stage."
    d = json.loads(path.read_text())
    name, metric = d.get("model_name"), d.get("metric", "score")
    # the champion after this decision: the challenger when it was promoted
    champion = d.get("challenger_version") if d.get("promoted") else d.get("champion_version")
    stays = f"champion {name} v{champion} stays" if champion is not None else f"{name} has no champion yet"
    if not ran:
        return f"retrain: nothing changed; {stays}."
    if "register" not in ran:
        return f"retrain: ran {', '.join(ran)}; no new model to register; {stays}."
    ch, old = d.get("challenger_score"), d.get("champion_score")
    if d.get("duplicate_of"):
        return f"retrain: ran {', '.join(ran)}; the weights are those of {name} v{d['duplicate_of']}, so no new version; {stays}."
    if d.get("promoted"):
        was = f", was {old:.4g}" if isinstance(old, int | float) else " (first version)"
        return f"retrain: promoted {name} v{d.get('challenger_version')} to champion ({metric} {ch:.4g}{was})."
    if champion is None:  # the first version was refused (the privacy gate, a non-finite score): a normal ending
        return f"retrain: {name} has no champion yet; v{d.get('challenger_version')} was not promoted ({d.get('reason')})."
    reason = d.get("reason")
    if not isinstance(old, int | float) or not isinstance(ch, int | float) or (reason and "does not beat" not in reason):
        # kept for another reason than its score (the privacy gate): say that reason
        return f"retrain: kept champion {name} v{champion}; challenger v{d.get('challenger_version')} was not promoted ({d.get('reason')})."
    return (
        f"retrain: kept champion {name} v{champion} ({metric} {old:.4g}); "
        f"challenger v{d.get('challenger_version')} scored {ch:.4g}, not better by {d.get('min_improvement', 0):.0%}."
    )


def retrain(root: Path, wait: float, pull: bool = True) -> str:
    """Run the whole retrain under the lock; return the summary line.

    Raises RetrainBusy (exit status 75) when another retrain holds the lock after
    ``wait`` seconds; nothing but the lock file is touched before the lock is held.
    """
    lock = FileLock(str(root / LOCK))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise RetrainBusy(
            f"another retrain is running (it holds {root / LOCK}), so this one exits without touching anything; "
            "use --wait SECONDS to queue behind it."
        ) from None
    try:
        logs = root / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"retrain-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log", "a") as log:  # append: the commands write to it too
            if pull:
                for target in raw_imports(root):
                    update_import(root, target, log)
                if has_remote(root, log):
                    _run(["dvc", "pull", "--allow-missing"], root, log)
            with repro_cluster([], root, _env()):  # one local Ray for every stage (or RAY_ADDRESS's)
                out = _run(["dvc", "repro"], root, log)
        return summary(root, out)
    finally:
        lock.release()


def cli_main(argv: list[str] | None = None) -> int:
    """``gan retrain``: print the summary line; exit 75 when another retrain is running."""
    parser = argparse.ArgumentParser(prog="gan retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a retrain already running (default 0)")
    parser.add_argument("--no-pull", action="store_true", help="skip dvc update/pull of raw data")
    parser.add_argument("--repo", default=None, help="project root (default: found from the working directory)")
    args = parser.parse_args(argv)
    root = Path(args.repo).resolve() if args.repo else repo_root()
    if not (root / "dvc.yaml").exists():
        raise GanError(f"{root} has no dvc.yaml; run gan retrain in the project's directory or pass --repo.")
    # a RetrainBusy goes through gan.errors.run_main like every GanError: one line, exit 75
    print(retrain(root, args.wait, pull=not args.no_pull))
    return 0
