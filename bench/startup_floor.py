"""Benchmark: the floor under Ray Train's start-up on this machine, with no Ray Train in it.

    python bench/startup_floor.py               # 3 rounds, JSON lines and a summary
    python bench/startup_floor.py --rounds 5

A stage run by ``gan repro`` is a fresh driver (a new Ray job) on a warm Ray. Ray Train
then needs at least a controller actor and a worker actor whose process imports torch;
Ray starts worker processes per job, so none is reused from an earlier stage. This
measures just that, in a fresh process per round: joining the warm Ray, a zero-CPU actor
answering (the controller's stand-in), and an actor that imports torch answering (the
worker's); beside it a plain ``python -c "import torch"`` and ``import ray``. Writes
bench/results/startup_floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "startup_floor.json"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import ray
ray.init(address=sys.argv[1], logging_level="ERROR")
t1 = time.perf_counter()

@ray.remote(num_cpus=0)
class Controller:
    def ping(self):
        return 1

@ray.remote(num_cpus=1)
class Worker:
    def ready(self):
        import torch
        return torch.__version__

ray.get(Controller.remote().ping.remote())
t2 = time.perf_counter()
ray.get(Worker.remote().ready.remote())
t3 = time.perf_counter()
print(json.dumps({"join_s": t1 - t0, "controller_actor_s": t2 - t1, "worker_actor_with_torch_s": t3 - t2, "total_s": t3 - t0}))
"""


def timed(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")  # the warm Ray
    address = ray.get_runtime_context().gcs_address
    rounds = []
    for _ in range(args.rounds):
        out = subprocess.run([sys.executable, "-c", CHILD, address], capture_output=True, text=True, check=True)
        rounds.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rounds[-1]), flush=True)
    ray.shutdown()
    result = {
        "rounds": rounds,
        "median": {k: statistics.median(r[k] for r in rounds) for k in rounds[0]},
        "plain_import_torch_s": timed("import torch"),
        "plain_import_ray_s": timed("import ray"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
        "load_average_at_end": os.getloadavg()[0],
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
