"""Benchmark: the prepare stage on generated folders of images, decoded locally and on Ray Data.

    python bench/prepare_throughput.py                          # 20,000 and 200,000 images, both routes
    python bench/prepare_throughput.py --sizes 2000 --routes local   # quicker
    python bench/prepare_throughput.py --cluster                # also the Ray route on a local two-node cluster

For each image count, in one run: images/s of ``prepare_dataset`` with ``prepare.engine:
local`` (decoded in the stage's process) and ``prepare.engine: ray`` (Ray Data tasks),
against a baseline measured in the same run (decode + resize only in one process, no
split, hashing or writing), and the peak RSS of the stage's process (the driver): both
routes stream, so it must stay flat in the image count. The Ray route's time is given
with and without starting Ray (a stage run by ``gan repro`` joins a running one). The
outputs of the two routes are compared byte for byte. ``--cluster`` adds the Ray route
on ``scripts/local_cluster.sh``'s two nodes (RAY_ADDRESS). Each measurement runs in a
fresh subprocess so peak RSS is its own. Writes bench/results/prepare_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "prepare_throughput.json"
SOURCE_SIZE, IMAGE_SIZE = 28, 16


def make_folder(root: Path, n: int, classes: int = 10, size: int = SOURCE_SIZE) -> Path:
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

    # the baseline decodes this list itself; the routes are given the folder and counted from
    # their manifest: a Path per file here would raise the peak RSS measured for them by tens of MB
    files = sorted(Path(folder).rglob("*.png"))[:limit] if mode == "baseline" else None
    count = len(files) if files is not None else 0
    init_s = 0.0
    if mode == "ray":
        from gan.ray_session import init_ray

        t = time.perf_counter()
        init_ray()
        init_s = time.perf_counter() - t
    start = time.perf_counter()
    if files is not None:
        for f in files:
            with Image.open(f) as img:
                to_array(img, IMAGE_SIZE, 1)
    else:
        cfg = PrepareConfig(source="image_folder", path=folder, image_size=IMAGE_SIZE, shard_size=4096, engine=mode)
        counts = prepare_dataset(cfg, Path(out) / "prepared")["counts"]
        count = sum(split["total"] for split in counts.values())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "n": count, "seconds": seconds, "init_s": init_s, "img_s": count / seconds,
                      "img_s_with_ray_start": count / (seconds + init_s), "peak_rss_mb": peak_mb}))  # fmt: skip


def measure(mode: str, folder: Path, limit: int, keep: Path | None = None, env: dict[str, str] | None = None) -> dict:
    """One fresh process; ``keep``: where its prepared output is moved (to compare the routes)."""
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), str(limit), out], capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"{mode} on {limit} images failed:\n{proc.stderr[-3000:]}")
        if keep is not None:
            shutil.move(str(Path(out) / "prepared"), keep)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_bytes(a: Path, b: Path) -> bool:
    return subprocess.run(["diff", "-rq", str(a), str(b)], capture_output=True).returncode == 0


def on_cluster(folder: Path, n: int) -> dict:
    """The Ray route on a local two-node cluster (scripts/local_cluster.sh), RAY_ADDRESS set."""
    script = ROOT / "scripts" / "local_cluster.sh"
    env = {**os.environ, "GAN_RAY_PORT": "6470"}
    started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, env=env, check=True).stdout
    try:
        for line in started.splitlines():  # export RAY_ADDRESS=127.0.0.1:6470 RAY_AUTH_MODE=token
            if line.startswith("export "):
                env.update(pair.split("=", 1) for pair in line.split()[1:])
        return measure("ray", folder, n, env=env)
    finally:
        subprocess.run(["bash", str(script), "stop"], capture_output=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000", help="image counts, comma-separated")
    parser.add_argument("--routes", default="local,ray")
    parser.add_argument("--cluster", action="store_true", help="also the Ray route on a local two-node cluster (largest size)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, folder, limit, out = args.child
        _child(mode, folder, int(limit), out)
        return
    sizes = [int(n) for n in args.sizes.split(",")]
    routes = args.routes.split(",")
    rows = []
    t_bench = time.perf_counter()
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            folder = make_folder(Path(tmp) / "raw", n)
            row: dict = {"images": n, "generate_s": round(time.perf_counter() - t0, 1)}
            row["baseline_img_s"] = round(measure("baseline", folder, n)["img_s"], 1)
            for route in routes:
                r = measure(route, folder, n, keep=Path(tmp) / route)
                row[route] = {k: round(v, 2) for k, v in r.items() if k not in ("mode", "n")}
                print(f"{n} images, {route}: {r['img_s']:.0f} img/s ({r['img_s_with_ray_start']:.0f} with Ray's start), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
            if len(routes) == 2:
                row["same_bytes"] = same_bytes(Path(tmp) / routes[0], Path(tmp) / routes[1])
            if args.cluster and n == max(sizes):
                r = on_cluster(folder, n)
                row["ray_two_nodes"] = {k: round(v, 2) for k, v in r.items() if k not in ("mode", "n")}
                print(f"{n} images, ray on two nodes: {r['img_s']:.0f} img/s", flush=True)
            rows.append(row)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "load_average_at_end": os.getloadavg()[0],
        "image": f"{SOURCE_SIZE}x{SOURCE_SIZE} grayscale PNG, prepared at {IMAGE_SIZE}x{IMAGE_SIZE}", "rows": rows,
        "bench_wall_s": round(time.perf_counter() - t_bench, 1),
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
