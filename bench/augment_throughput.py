"""Benchmark: `gan augment` throughput against the bare generator, and its peak memory.

    python bench/augment_throughput.py                   # N = 100,000, batch 500, prints a table
    python bench/augment_throughput.py --n 20000         # quicker

The generator has the default params.yaml shape (DCGAN, z_dim 64, g_width 64, 16x16x1,
10 classes; random weights: the speed does not depend on them), registered in a
temporary SQLite MLflow store with the alias ``champion``. Measured, each in a fresh
subprocess so that its peak RSS is its own:

    direct        load_generator + G(z, y) in a loop at the batch size: the PyTorch ceiling
    stream        gan.augment.generate(models:/bench-gan@champion, N): the batches only
    npz           gan augment --format npz: generation + streaming into samples.npz
    image_folder  gan augment --format image_folder at N/10: one PNG per image

Throughput excludes start-up (imports, resolving the alias, loading the model), which
is reported separately as ``startup_s``; ``ratio`` is npz images/s over direct images/s
(target >= 0.9). Each throughput is the best of ``--repeat`` runs, alternating direct
and npz, because the machine is shared. Peak RSS of the npz run at N/10 and at N shows
that memory does not grow with N. Writes bench/results/augment_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "augment_throughput.json"
ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench-gan"


def register_default_generator(root: Path) -> str:
    """A random-weight generator of the default config, registered as MODEL@champion; returns the store URI."""
    import torch
    from mlflow import MlflowClient

    from gan.config import load_params
    from gan.export import save_generator
    from gan.models import build_G, model_kwargs
    from gan.registry import log_generator
    from gan.tracking import configure

    params = load_params(ROOT / "params.yaml")
    channels, size, classes = params.prepare.channels, params.prepare.image_size, 10
    G_kwargs, _ = model_kwargs(params.model, channels, size, classes)
    torch.manual_seed(0)
    G = build_G(params.model.arch, **G_kwargs).eval()
    spec = {"arch": params.model.arch, "G_kwargs": G_kwargs, "z_dim": G_kwargs["z_dim"], "num_classes": classes,
            "class_names": [str(k) for k in range(classes)], "channels": channels, "image_size": size}  # fmt: skip
    save_generator(G, spec, root / "generator")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    configure()
    version = log_generator(root / "generator", MODEL, params={}, metrics={}, tags={"bench": "augment_throughput"})
    MlflowClient().set_registered_model_alias(MODEL, "champion", version.version)
    return uri


def _child(mode: str, n: int, batch_size: int, root: str) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    t0 = time.perf_counter()
    if mode == "direct":
        import torch

        from gan.export import load_generator

        G, spec = load_generator(Path(root) / "generator")
        classes = spec["num_classes"]
        gen = torch.Generator().manual_seed(0)
        startup = time.perf_counter() - t0
        start = time.perf_counter()
        with torch.inference_mode():
            for first in range(0, n, batch_size):
                b = min(batch_size, n - first)
                z = torch.randn(b, G.z_dim, generator=gen)  # [B, z_dim]
                y = torch.arange(first, first + b) % classes  # [B]
                G(z, y)
    else:
        from gan.augment import generate, write_dataset

        count = n // 10 if mode == "image_folder" else n
        stream = generate(f"models:/{MODEL}@champion", count, seed=0, batch_size=batch_size)
        startup = time.perf_counter() - t0
        start = time.perf_counter()
        if mode == "stream":
            for _ in stream:
                pass
        else:
            write_dataset(stream, Path(root) / f"out-{mode}-{count}-{os.getpid()}", mode, progress=False)
        n = count
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "n": n, "seconds": seconds, "img_s": n / seconds, "startup_s": startup, "peak_rss_mb": peak_mb}))


def measure(mode: str, n: int, batch_size: int, root: Path, uri: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, __file__, "--child", mode, str(n), str(batch_size), str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["img_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, n, batch_size, root = args.child
        _child(mode, int(n), int(batch_size), root)
        return
    with tempfile.TemporaryDirectory(prefix="augment-bench-") as tmp:
        root = Path(tmp)
        uri = register_default_generator(root)
        direct, npz = [], []
        for _ in range(args.repeat):  # alternate, so that load from other users hits both alike
            direct.append(measure("direct", args.n, args.batch_size, root, uri))
            npz.append(measure("npz", args.n, args.batch_size, root, uri))
        stream = measure("stream", args.n, args.batch_size, root, uri)
        folder = measure("image_folder", args.n, args.batch_size, root, uri)
        small = measure("npz", args.n // 10, args.batch_size, root, uri)
    d, z = best(direct), best(npz)
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, no GPU (shared)",
        "python": platform.python_version(),
        "torch_threads": __import__("torch").get_num_threads(),
        "model": "dcgan z_dim 64 g_width 64, 16x16x1, 10 classes",
        "n": args.n,
        "batch_size": args.batch_size,
        "direct_img_s": round(d["img_s"], 1),
        "stream_img_s": round(stream["img_s"], 1),
        "npz_img_s": round(z["img_s"], 1),
        "ratio": round(z["img_s"] / d["img_s"], 3),
        "image_folder_img_s": round(folder["img_s"], 1),
        "image_folder_n": folder["n"],
        "direct_runs_img_s": [round(r["img_s"], 1) for r in direct],
        "npz_runs_img_s": [round(r["img_s"], 1) for r in npz],
        "startup_s_direct": round(d["startup_s"], 2),
        "startup_s_augment": round(z["startup_s"], 2),
        "peak_rss_mb_direct": round(d["peak_rss_mb"], 1),
        f"peak_rss_mb_npz_n{args.n // 10}": round(small["peak_rss_mb"], 1),
        f"peak_rss_mb_npz_n{args.n}": round(z["peak_rss_mb"], 1),
        "peak_rss_growth": round(z["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
