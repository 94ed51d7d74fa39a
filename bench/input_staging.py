"""Benchmark: what staging the prepared data for workers on other nodes costs (gan/training/inputs.py).

    python bench/input_staging.py                      # 20,000 and 200,000 images of 3x32x32 uint8
    python bench/input_staging.py --images 20000       # one size

For a prepared-data folder of N images (shards of the prepared format's size, random
bytes: the copy does not look at them), the median of ``--repeats`` runs of:

    cp -r          the baseline: one plain recursive copy of the folder
    stage          the driver's stage_input into a storage folder (pyarrow.fs copy + marker)
    node copy      a worker's local_path on a node without the driver's path: staged -> node cache
    driver path    a worker's local_path where the driver's path is visible (hash check only)

and the driver's peak memory growth over the whole run (it must not grow with N: the
copies stream). After the one copy per node and data hash, workers memory-map the same
shard files as before, so the training read path itself is unchanged. Writes
bench/results/input_staging.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gan.training.inputs import CACHE_ENV, local_path, stage_input

RESULTS = Path(__file__).parent / "results" / "input_staging.json"
SHARD_IMAGES = 4096


def make_prepared(root: Path, images: int, image_bytes: int = 3 * 32 * 32) -> int:
    """A folder shaped like data/prepared: a manifest and uint8 shards of ``SHARD_IMAGES`` images; its size in bytes."""
    root.mkdir(parents=True)
    total, left, i = 0, images, 0
    while left > 0:
        n = min(left, SHARD_IMAGES)
        (root / f"train-{i:05d}.npy").write_bytes(os.urandom(n * image_bytes))
        total += n * image_bytes
        left, i = left - n, i + 1
    (root / "manifest.json").write_text(json.dumps({"hash": os.urandom(8).hex(), "images": images}))
    return total


def timed(fn, *args):
    """(seconds, result) of ``fn(*args)``."""
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def measure(images: int, repeats: int, work: Path) -> dict:
    data = work / f"prepared-{images}"
    size = make_prepared(data, images)
    rows: dict[str, list[float]] = {"cp -r": [], "stage": [], "node copy": [], "driver path": []}
    for r in range(repeats):
        storage, cache = work / f"storage-{images}-{r}", work / f"cache-{images}-{r}"
        rows["cp -r"].append(timed(subprocess.run, ["cp", "-r", str(data), str(work / f"cp-{images}-{r}")])[0])
        seconds, ref = timed(stage_input, "data", data, str(storage))
        rows["stage"].append(seconds)
        rows["driver path"].append(timed(local_path, ref)[0])
        os.environ[CACHE_ENV] = str(cache)
        rows["node copy"].append(timed(local_path, {**ref, "driver_path": str(work / "not-on-this-node")})[0])
        for p in (storage, cache, work / f"cp-{images}-{r}"):
            shutil.rmtree(p, ignore_errors=True)
    shutil.rmtree(data)
    med = {k: statistics.median(v) for k, v in rows.items()}
    base = med["cp -r"]
    return {"images": images, "mib": round(size / 2**20, 1), "median_s": {k: round(v, 3) for k, v in med.items()},
            "mib_s": {k: round(size / 2**20 / v, 1) for k, v in med.items() if k != "driver path"},
            "ratio_to_cp": {k: round(v / base, 2) for k, v in med.items() if k != "cp -r"}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", type=int, default=[20_000, 200_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for n in args.images:
            rows.append(measure(n, args.repeats, Path(tmp)))
            rows[-1]["driver_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "input_staging", "rows": rows, "rss_at_start_mib": round(rss0, 1), "repeats": args.repeats,
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
