"""Benchmark: how long a stage's process takes to exit once its work is done.

    nice -n 5 python bench/process_exit.py            # 5 alternated rounds
    nice -n 5 python bench/process_exit.py --rounds 9

Each round starts two child processes that import what a stage imports (torch,
torchvision, MLflow, scikit-learn, Ray), build a small torch model and run an MLflow
client call on a SQLite store, then return through :func:`gan.errors.run_main`, as every
stage and ``gan`` command does. One child keeps the product's
:func:`gan.errors.skip_collection_at_exit`; the baseline unregisters it, which is
CPython's own teardown. Measured: wall time from ``main`` returning (the child prints a
timestamp) to the process having exited, and the whole child's wall time. Reports
medians and their ratio, the machine; writes ``--out`` (default
bench/results/process_exit.json).
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
RESULTS = ROOT / "bench" / "results" / "process_exit.json"

CHILD = r"""
import atexit, sys, time
from gan.errors import run_main, skip_collection_at_exit

def main():
    import mlflow, ray, sklearn.svm, torch, torchvision  # what the stages import
    import gan.models  # noqa: F401  (the product's networks)
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(8)])
    model(torch.zeros(4, 64)).sum().backward()
    mlflow.set_tracking_uri(f"sqlite:///{sys.argv[2]}")
    mlflow.MlflowClient().search_experiments()
    if sys.argv[1] == "baseline":
        atexit.unregister(skip_collection_at_exit)
    print(f"RETURNED {time.time()}", flush=True)
    return 0

run_main(main)
"""


def child(mode: str, store: Path) -> dict[str, float]:
    """One child process: seconds from ``main`` returning to exit, and in all."""
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(store)], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    end = time.time()
    returned = float(next(line for line in proc.stdout.splitlines() if line.startswith("RETURNED")).split()[1])
    return {"exit_s": end - returned, "total_s": end - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "product": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "mlflow.db"
        child("product", store)  # warm the file cache and create the store's tables
        for i in range(args.rounds):
            for mode in ("baseline", "product") if i % 2 == 0 else ("product", "baseline"):
                runs[mode].append(child(mode, store))
                print(mode, {k: round(v, 2) for k, v in runs[mode][-1].items()}, flush=True)
    medians = {mode: {k: round(statistics.median(r[k] for r in rs), 2) for k in ("exit_s", "total_s")} for mode, rs in runs.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
        "rounds": args.rounds,
        "median": medians,
        "exit_ratio": round(medians["product"]["exit_s"] / medians["baseline"]["exit_s"], 3),
        "total_ratio": round(medians["product"]["total_s"] / medians["baseline"]["total_s"], 3),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("median", "exit_ratio", "total_ratio")}))


if __name__ == "__main__":
    main()
