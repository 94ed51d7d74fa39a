"""Benchmark: Progressive GAN against the same network trained at full size from the start, on the RGB default.

    python bench/progan_photos.py                         # 3 seeds, 2 at a time, 2000 growing steps each
    python bench/progan_photos.py --steps 300 --seeds 0   # quicker

Data: the embedded RGB default (``prepare.source: photo_patches``, 32x32 patches of six
bundled photographs, one class each, 500 per photograph). Both runs use ProGAN's final
architecture (``model.arch: progan``, the same widths and parameters) and recipe (WGAN-GP
lambda 10 with the drift term, Adam 1e-3 betas (0, 0.99), G_ema 0.999), through the
project's trainer. They differ only in the schedule:

* **growing**: 4x4 -> 8x8 -> 16x16 -> 32x32, ``--fade-images`` per fade-in and
  ``--stabilise-images`` per resolution (images shown), for ``--steps`` steps;
* **fixed**: fully grown from step 0 (fade and stabilisation lengths 0), trained for as
  many seconds as the growing run of the same seed took (equal wall clock).

Per run: FID, precision and recall in the feature space of a classifier trained on the
patches (``gan.features``), and the sliced Wasserstein distance on Laplacian-pyramid
patches (``gan.metrics.swd``, the paper's metric, x 1e3, per level and mean), of G_ema's
samples against the validation patches; beside them the real-vs-real floor (training
patches in G's place). Medians over the seeds with the wall time and the machine; writes
bench/results/progan_photos.json and a sample grid (.png: growing above fixed, one
column per class); see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gan.config import FeaturizeConfig, PrepareConfig, parse_params
from gan.data import load_split, prepare_dataset, read_manifest
from gan.evaluation import evaluate_generator, real_floor
from gan.features import load_feature_net, save_feature_net, train_feature_net
from gan.metrics.swd import pyramid_swd
from gan.sampling import sample, to_uint8
from gan.tasks import make_task
from gan.training import GANTrainer

RESULTS = Path(__file__).parent / "results" / "progan_photos.json"
MODES = ("growing", "fixed")


def params_for(args: argparse.Namespace, seed: int, growing: bool, steps: int) -> Any:
    """ProGAN's recipe at 32x32 RGB; ``growing`` picks the schedule, nothing else differs."""
    schedule = {"fade_images": args.fade_images, "stabilise_images": args.stabilise_images} if growing else {"fade_images": 0, "stabilise_images": 0}
    return parse_params({
        "prepare": {"source": "photo_patches", "image_size": 32, "channels": 3},
        "model": {"arch": "progan", "conditional": True, "z_dim": 64, "g_width": args.width, "d_width": args.width, "loss": "wgan-gp"},
        "train": {"batch_size": args.batch, "steps": steps, "seed": seed, "mixed_precision": "none", "lr_G": 1e-3, "lr_D": 1e-3,
                  "beta1": 0.0, "beta2": 0.99, "ema_decay": 0.999, "gp_weight": 10.0, "n_critic": 1, "progan": {**schedule, "drift": 0.001}},
    })  # fmt: skip


def evaluate(G: torch.nn.Module, feature_net: Any, val_x: np.ndarray, val_y: np.ndarray, samples: int, seed: int) -> dict[str, float]:
    m = evaluate_generator(G, feature_net, val_x, val_y, samples, seed=seed)
    fakes = torch.cat([xb for xb, _ in sample(G, samples, seed=seed)])
    swd = pyramid_swd(torch.as_tensor(val_x), fakes, seed=seed)
    return {**{k: round(float(v), 4) for k, v in m.items() if isinstance(v, int | float)}, **{k: round(v, 2) for k, v in swd.items()}}


def run_seed(args: argparse.Namespace, seed: int, data: str, features: str) -> dict[str, Any]:
    """Both runs of one seed (growing first: its wall time is the fixed run's budget)."""
    torch.set_num_threads(args.threads)
    feature_net = load_feature_net(features)
    val_x, val_y = (np.array(a) for a in load_split(data, "val"))
    out: dict[str, Any] = {}
    budget = None
    for mode in MODES:
        growing = mode == "growing"
        params = params_for(args, seed, growing, args.steps if growing else 10**7)
        trainer = GANTrainer(params, data, task=make_task(params, read_manifest(data)))
        t0 = time.perf_counter()
        while (trainer.step < args.steps) if growing else (time.perf_counter() - t0 < budget):
            trainer.train_step()
        seconds = time.perf_counter() - t0
        budget = budget or seconds
        G = trainer.G_ema.eval()
        row = {"seed": seed, "steps": trainer.step, "seconds": round(seconds, 1), "growth": list(G.growth()),
               "images": trainer.step * args.batch, **evaluate(G, feature_net, val_x, val_y, args.samples, seed)}  # fmt: skip
        labels = [c for c in range(6) for _ in range(4)]
        row["grid"] = to_uint8(torch.cat([xb for xb, _ in sample(G, len(labels), labels=labels, seed=0)])).numpy().tolist() if seed == args.seeds[0] else None
        print(f"seed {seed} {mode:8s}: FID {row['fid']:.3f} SWD {row['swd']:.1f} (32: {row['swd/32']:.1f}, 16: {row['swd/16']:.1f}) "
              f"precision {row['precision']:.3f} recall {row['recall']:.3f}, {row['steps']} steps in {row['seconds']}s", flush=True)  # fmt: skip
        out[mode] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000, help="steps of the growing run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=128, help="channels at 4x4 (halving per doubling)")
    parser.add_argument("--fade-images", type=int, default=6400)
    parser.add_argument("--stabilise-images", type=int, default=6400)
    parser.add_argument("--samples", type=int, default=600, help="generated samples per evaluation")
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained at once, one process each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data, features = Path(tmp) / "prepared", Path(tmp) / "features"
        manifest = prepare_dataset(PrepareConfig(source="photo_patches", image_size=32, channels=3), data)
        train_x, train_y = (np.array(a) for a in load_split(data, "train"))
        val_x, val_y = (np.array(a) for a in load_split(data, "val"))
        domain, clf = train_feature_net(train_x, train_y, val_x, val_y, len(manifest["class_names"]), FeaturizeConfig(epochs=8))
        save_feature_net(domain, features, {"class_names": manifest["class_names"]})
        feature_net = load_feature_net(features)
        floor = {k: round(float(v), 4) for k, v in real_floor(feature_net, train_x, train_y, val_x, val_y, num_samples=args.samples, seed=0).items()
                 if isinstance(v, int | float)}  # fmt: skip
        pick = np.random.default_rng(0).permutation(len(train_x))[: args.samples]
        floor.update({k: round(v, 2) for k, v in pyramid_swd(torch.as_tensor(val_x), torch.as_tensor(train_x[pick]), seed=0).items()})
        print(f"classes {manifest['class_names']}; classifier val accuracy {clf['val_accuracy']:.4f}; "
              f"floor FID {floor['fid']:.3f}, SWD {floor['swd']:.1f}", flush=True)
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            seeds = list(pool.map(run_seed, [args] * len(args.seeds), args.seeds, [str(data)] * len(args.seeds), [str(features)] * len(args.seeds)))

    rows = {mode: [s[mode] for s in seeds] for mode in MODES}
    grids = {mode: np.asarray(rows[mode][0].pop("grid"), dtype=np.uint8) for mode in MODES}
    for mode in MODES:
        for r in rows[mode][1:]:
            r.pop("grid")
    keys = ("fid", "swd", "swd/32", "swd/16", "precision", "recall", "seconds", "steps")
    result = {
        "benchmark": "progan_photos",
        "settings": {**vars(args), "photos": manifest["class_names"], "image_size": 32},
        "classifier": clf,
        "floor": floor,
        "median": {mode: {k: float(statistics.median(r[k] for r in rows[mode])) for k in keys} for mode in MODES},
        "runs": rows,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpus": mp.cpu_count(), "threads_per_process": args.threads, "processes": args.jobs},  # fmt: skip
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    # one row of 6 classes x 4 samples per mode, growing above fixed
    grid = np.concatenate([np.concatenate(list(grids[m].transpose(0, 2, 3, 1)), axis=1) for m in MODES])
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(out.with_suffix(".png"))
    for mode in MODES:
        print(f"median {mode}: " + ", ".join(f"{k} {result['median'][mode][k]:.3f}" for k in keys))
    print(f"floor: FID {floor['fid']:.3f}, SWD {floor['swd']:.1f}; wrote {out} ({result['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
