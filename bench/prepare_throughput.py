"""Benchmark: the prepare stage on a generated folder of small images.

    python bench/prepare_throughput.py              # 20,000 images, prints a table
    python bench/prepare_throughput.py --n 2000     # quicker

Reports images/s of ``prepare_dataset`` against a baseline measured in the same
run (decode + resize only, no split, hashing or writing), and peak RSS of prepare
at N/4 and N images: the stage streams, so peak memory must not grow with N.
Each measurement runs in a fresh subprocess so peak RSS is its own.
Writes bench/results/prepare_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).parent / "results" / "prepare_throughput.json"


def make_folder(root: Path, n: int, classes: int = 10, size: int = 28) -> Path:
    """``n`` random grayscale PNGs of ``size`` px in ``classes`` sub-folders."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = rng.integers(0, 255, (size, size), dtype=np.uint8)
        Image.fromarray(arr, "L").save(root / f"class{i % classes}" / f"{i:06d}.png")
    return root


def _child(mode: str, folder: str, limit: int, out: str) -> None:
    """Run one measurement in this (fresh) process and print JSON."""
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset
    from gan.data.preprocess import to_array

    files = sorted(Path(folder).rglob("*.png"))[:limit]
    start = time.perf_counter()
    if mode == "baseline":
        for f in files:
            with Image.open(f) as img:
                to_array(img, 16, 1)
    else:
        src = Path(out) / "subset"
        if limit < len(list(Path(folder).rglob("*.png"))):
            for f in files:  # a subset folder of symlinks, same class layout
                dst = src / f.parent.name / f.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(f)
        else:
            src = Path(folder)
        prepare_dataset(PrepareConfig(source="image_folder", path=str(src), image_size=16, shard_size=4096), Path(out) / "prepared")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "n": len(files), "seconds": seconds, "img_s": len(files) / seconds, "peak_rss_mb": peak_mb}))


def measure(mode: str, folder: Path, limit: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), str(limit), out], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, folder, limit, out = args.child
        _child(mode, folder, int(limit), out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = make_folder(Path(tmp) / "raw", args.n)
        gen_s = time.perf_counter() - t0
        base = measure("baseline", folder, args.n)
        small = measure("prepare", folder, args.n // 4)
        full = measure("prepare", folder, args.n)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {__import__('os').cpu_count()} cores".strip(),
        "python": platform.python_version(),
        "images": args.n,
        "generate_s": round(gen_s, 1),
        "baseline_img_s": round(base["img_s"], 1),
        "prepare_img_s": round(full["img_s"], 1),
        "ratio_vs_baseline": round(full["img_s"] / base["img_s"], 3),
        "peak_rss_mb_quarter": round(small["peak_rss_mb"], 1),
        "peak_rss_mb_full": round(full["peak_rss_mb"], 1),
        "peak_rss_growth": round(full["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
