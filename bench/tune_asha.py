"""Benchmark: ASHA against running every trial to the end, on the default data set.

    python bench/tune_asha.py                # 4x4 grid over lr_G x lr_D, 400 steps per trial, rungs every 50
    python bench/tune_asha.py --grid 3 --steps 150    # quicker

Both searches train the same configurations (a ``--grid`` x ``--grid`` log grid over the
default tune.lr_G x tune.lr_D ranges) with the same seeds; the exhaustive one (FIFO)
runs each to ``--steps``, ASHA (reduction factor ``--reduction-factor``, first rung at
``--eval-every`` steps) stops poor ones at its rungs.
Reports the best FID each reached, the total trial-steps each spent (the compute),
and per-trial overhead: the start-up inside the trial process (``setup_s``) and the
wall time per trial beyond its own running time (actor start, scheduling).
Target: ASHA within 5% of the exhaustive best at <= 30% of its trial-steps.
Writes bench/results/tune_asha.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "tune_asha.json"


def setup_data(root: Path) -> tuple[Path, Path, str]:
    from gan.config import load_params
    from gan.data import prepare_dataset
    from gan.stages import featurize

    params = load_params(Path(__file__).parents[1] / "params.yaml")
    manifest = prepare_dataset(params.prepare, root / "prepared")
    featurize.main(["--params", str(Path(__file__).parents[1] / "params.yaml"), "--data", str(root / "prepared"),
                    "--out", str(root / "features"), "--metrics", str(root / "featurize.json")])
    return root / "prepared", root / "features", manifest["hash"]


def search(scheduler: str, args: argparse.Namespace, data: Path, features: Path, data_hash: str, storage: Path) -> dict:
    from gan.config import load_params
    from gan.tuning import run_search

    steps = args.steps
    overrides = {"tune.scheduler": scheduler, "tune.search_alg": "grid", "tune.num_samples": args.grid**2, "tune.max_steps": steps,
                 "tune.eval_every": args.eval_every, "tune.grace_period": 1, "tune.reduction_factor": args.reduction_factor,
                 "tune.storage_path": str(storage), "tune.max_concurrent_trials": 2}
    params = load_params(Path(__file__).parents[1] / "params.yaml", overrides)
    t0 = time.perf_counter()
    result = run_search(params, str(data), str(features), data_hash)
    wall = time.perf_counter() - t0
    rows = [r for r in result["rows"] if r["status"] == "completed"]
    running = sum(r["time_total_s"] for r in result["rows"])
    return {
        "best_fid": min(r["score"] for r in rows),
        "trial_steps": sum(r["steps"] for r in result["rows"]),
        "trials": len(result["rows"]),
        "stopped_early": sum(r["steps"] < steps for r in result["rows"]),
        "wall_s": wall,
        "setup_s_mean": statistics.mean(r["setup_s"] for r in result["rows"]),
        # wall time per trial not spent inside the trial (actor start, scheduling), with 2 at once
        "overhead_s_per_trial": max(0.0, (wall * 2 - running) / len(result["rows"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--grid", type=int, default=4, help="grid points per learning rate")
    parser.add_argument("--reduction-factor", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + tempfile.mktemp(suffix=".db"))
    from gan.ray_session import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, features, data_hash = setup_data(root)
        init_ray(num_cpus=2)
        full = search("fifo", args, data, features, data_hash, root / "ray")
        asha = search("asha", args, data, features, data_hash, root / "ray")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "steps_per_trial": args.steps,
        "eval_every": args.eval_every,
        "grid": f"{args.grid}x{args.grid}",
        "reduction_factor": args.reduction_factor,
        "exhaustive": full,
        "asha": asha,
        "best_ratio_asha_over_exhaustive": asha["best_fid"] / full["best_fid"],
        "compute_ratio_asha_over_exhaustive": asha["trial_steps"] / full["trial_steps"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':<12}{'best FID':>10}{'trial-steps':>13}{'stopped':>9}{'wall s':>8}{'setup s':>9}{'overhead s':>12}")
    for name in ("exhaustive", "asha"):
        r = result[name]
        print(f"{name:<12}{r['best_fid']:>10.2f}{r['trial_steps']:>13}{r['stopped_early']:>9}{r['wall_s']:>8.0f}{r['setup_s_mean']:>9.2f}{r['overhead_s_per_trial']:>12.2f}")
    print(f"ASHA best / exhaustive best = {result['best_ratio_asha_over_exhaustive']:.3f}; "
          f"compute ratio = {result['compute_ratio_asha_over_exhaustive']:.2f}")


if __name__ == "__main__":
    main()
