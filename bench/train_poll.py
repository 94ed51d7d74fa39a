"""Benchmark: the wall time of a short Ray Train run against the controller's poll interval.

    python bench/train_poll.py                          # intervals 2.0 (Ray's default), 0.5, 0.25; 3 rounds
    python bench/train_poll.py --intervals 2.0 0.5 --rounds 5 --steps 120

Ray Train V2's controller polls its workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``
seconds (2 s by default). A worker's ``ray.train.report`` waits until the controller has
taken the previous report, and the end of a run is seen at the next poll, so a run that
reports every few seconds (each checkpoint, each evaluation) waits on the poll. This runs
the same tiny training (the digits at 8x8, DCGAN widths 16, a checkpoint every 10 steps)
through ``gan.training.ray_run.run_training`` on one local Ray, the intervals alternated
in each round so that machine noise falls on all of them, and reports the median wall
time of each with its ratio to Ray's default. The interval is read from the environment
when a run starts (Ray Train passes it from the driver to its controller), so one Ray
serves every run. Writes bench/results/train_poll.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).parent / "results" / "train_poll.json"
ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def tiny_params(storage: Path, steps: int, seed: int) -> dict:
    return {
        "prepare": {"image_size": 8},
        "model": {"arch": "dcgan", "conditional": True, "z_dim": 16, "g_width": 16, "d_width": 16, "loss": "hinge"},
        "train": {"batch_size": 32, "steps": steps, "log_every": 10, "checkpoint_every": 10, "sample_every": steps,
                  "storage_path": str(storage), "seed": seed},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intervals", nargs="+", default=["2.0", "0.5", "0.25"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import ray

    from gan.config import PrepareConfig, parse_params
    from gan.data import prepare_dataset
    from gan.training.ray_run import run_training

    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="train-poll-"))
    prepare_dataset(PrepareConfig(image_size=8), tmp / "data")
    os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    # a first run warms what every later run shares (the Train helper actors), measured by none
    os.environ[ENV] = args.intervals[0]
    run_training(parse_params(tiny_params(tmp / "ray", args.steps, 1000)), tmp / "data", name="train-warmup")
    walls: dict[str, list[float]] = {interval: [] for interval in args.intervals}
    for rnd in range(args.rounds):
        order = args.intervals if rnd % 2 == 0 else args.intervals[::-1]
        for interval in order:
            os.environ[ENV] = interval
            start = time.perf_counter()
            outcome = run_training(parse_params(tiny_params(tmp / "ray", args.steps, rnd)), tmp / "data", name=f"train-{interval}-{rnd}")
            walls[interval].append(time.perf_counter() - start)
            assert outcome.summary["step"] == args.steps
            print(json.dumps({"round": rnd, "interval_s": float(interval), "wall_s": round(walls[interval][-1], 2)}), flush=True)
    ray.shutdown()
    base = statistics.median(walls[args.intervals[0]])
    summary = {interval: {"median_wall_s": round(statistics.median(w), 2), "ratio": round(statistics.median(w) / base, 3),
                          "walls_s": [round(x, 2) for x in w]} for interval, w in walls.items()}  # fmt: skip
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
              "steps": args.steps, "checkpoint_every": 10, "rounds": args.rounds, "baseline_interval_s": float(args.intervals[0]),
              "load_average_at_start": load, "results": summary}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for interval, row in summary.items():
        print(f"interval {interval} s: median {row['median_wall_s']} s ({row['ratio']}x the {args.intervals[0]} s default)")


if __name__ == "__main__":
    main()
