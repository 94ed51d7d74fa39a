"""Benchmark: the DCGAN generator's up-sampling on RGB photographs, transposed convolution vs resize + conv.

    python bench/rgb_upsampling.py                              # 3 seeds, 1000 steps, two photographs
    python bench/rgb_upsampling.py --steps 300 --seeds 0        # quicker

The data set is the kind an outside probe found checkerboards on: 32x32 RGB patches of two
bundled photographs (``chelsea``: a cat, ``coffee``: a cup), one class each, cut at random
from the photographs resized to 96 px on the short side. Both generators train through the
project's trainer (``gan.training.GANTrainer``, the ``generate`` task) with the default
recipe (conditional DCGAN, hinge loss, spectral-norm D, Adam 2e-4 / (0.5, 0.999)); only
``model.g_upsample`` differs. Per seed and mode:

* FID, recall and coverage (and per class) in the feature space of a classifier trained
  on the patches (``gan.features``), beside the real-vs-real floor;
* the **checkerboard share**: the fraction of the images' spectral power (DC removed) at
  the Nyquist row and column of the 2-D FFT, i.e. in patterns that alternate every pixel;
  reported as the ratio to the real patches' share (1.0 = as in the data; a transposed
  convolution's uneven overlap shows up as a ratio well above 1).

Medians over ``--seeds`` with the wall time and the machine; writes
bench/results/rgb_upsampling.json and bench/results/rgb_upsampling.png (samples of the
first seed, transposed above resize); see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gan.config import FeaturizeConfig, PrepareConfig, parse_params
from gan.data import load_split, prepare_dataset, read_manifest
from gan.data.photos import load_photo
from gan.evaluation import evaluate_generator, real_floor
from gan.features import FeatureNet, train_feature_net
from gan.sampling import sample, to_uint8
from gan.tasks.generate import GenerateTask
from gan.training import GANTrainer

RESULTS = Path(__file__).parent / "results" / "rgb_upsampling.json"
PHOTOS = ("chelsea", "coffee")
MODES = ("transposed", "resize")


def patches(name: str, count: int, size: int, short_side: int, seed: int) -> np.ndarray:
    """``count`` random ``size`` x ``size`` crops of the bundled photo ``name`` resized to ``short_side``: uint8 [count, size, size, 3]."""
    img = Image.fromarray(load_photo(name))
    scale = short_side / min(img.size)
    img = np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS))
    rng = np.random.default_rng(seed)
    tops = rng.integers(0, img.shape[0] - size + 1, count)
    lefts = rng.integers(0, img.shape[1] - size + 1, count)
    return np.stack([img[t : t + size, l_ : l_ + size] for t, l_ in zip(tops, lefts, strict=True)])


def checkerboard_share(x: torch.Tensor | np.ndarray) -> float:
    """Share of the spectral power (DC removed) at the FFT's Nyquist row and column; ``x [N, C, H, W]``.

    Written here because no metric library measures it: a pattern that alternates every
    pixel (the checkerboard of an unevenly overlapping transposed convolution) puts its
    energy exactly there.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    x = x - x.mean(dim=(-2, -1), keepdim=True)  # DC removed per image and channel
    power = torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1))  # [H, W]
    h, w = power.shape
    nyquist = power[h // 2, :].sum() + power[:, w // 2].sum() - power[h // 2, w // 2]
    return float(nyquist / power.sum())


def params_for(mode: str, seed: int, batch: int) -> Any:
    """The default generate recipe at 32x32 RGB; only the up-sampling differs."""
    return parse_params({
        "prepare": {"image_size": 32, "channels": 3},
        "model": {"arch": "dcgan", "conditional": True, "z_dim": 64, "g_width": 256, "d_width": 64, "loss": "hinge",
                  "spectral_norm_D": True, "g_upsample": mode},
        "train": {"batch_size": batch, "seed": seed, "mixed_precision": "none", "lr_G": 2e-4, "lr_D": 2e-4,
                  "beta1": 0.5, "beta2": 0.999, "ema_decay": 0.999},
    })  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=1000, help="patches per photograph")
    parser.add_argument("--samples", type=int, default=1000, help="generated samples per evaluation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    grids: dict[str, np.ndarray] = {}

    with tempfile.TemporaryDirectory() as tmp:
        x = np.concatenate([patches(name, args.per_class, 32, 96, seed=k) for k, name in enumerate(PHOTOS)])
        y = np.repeat(np.arange(len(PHOTOS)), args.per_class)
        np.savez(Path(tmp) / "patches.npz", x=x, y=y)
        data = Path(tmp) / "prepared"
        prepare_dataset(PrepareConfig(source="npz", path=str(Path(tmp) / "patches.npz"), image_size=32, channels=3), data)
        train_x, train_y = (np.array(a) for a in load_split(data, "train"))
        val_x, val_y = (np.array(a) for a in load_split(data, "val"))
        domain, clf = train_feature_net(train_x, train_y, val_x, val_y, len(PHOTOS), FeaturizeConfig(epochs=8))
        feature_net = FeatureNet(domain, {"kind": "classifier"})
        floor = real_floor(feature_net, train_x, train_y, val_x, val_y, seed=0)
        real_share = checkerboard_share(val_x)
        print(f"classifier val accuracy {clf['val_accuracy']:.4f}; floor FID {floor['fid']:.3f}; real checkerboard share {real_share:.5f}", flush=True)

        for seed in args.seeds:
            for mode in MODES:
                params = params_for(mode, seed, args.batch)
                trainer = GANTrainer(params, data, task=GenerateTask(params, read_manifest(data)))
                t0 = time.perf_counter()
                while trainer.step < args.steps:
                    trainer.train_step()
                seconds = time.perf_counter() - t0
                G = trainer.G_ema.eval()
                m = evaluate_generator(G, feature_net, val_x, val_y, args.samples, seed=seed)
                fakes = torch.cat([xb for xb, _ in sample(G, args.samples, seed=seed)])
                share = checkerboard_share(fakes)
                rows[mode].append({"seed": seed, "steps": trainer.step, "seconds": round(seconds, 1),
                                   "checkerboard_ratio": round(share / real_share, 3),
                                   **{k: round(float(v), 4) for k, v in m.items() if isinstance(v, int | float)}})  # fmt: skip
                if seed == args.seeds[0]:
                    grids[mode] = to_uint8(torch.cat([xb for xb, _ in sample(G, 16, labels=[0] * 8 + [1] * 8, seed=0)])).numpy()
                r = rows[mode][-1]
                print(f"seed {seed} {mode:10s}: FID {r['fid']:.3f} recall {r['recall']:.3f} coverage {r['coverage']:.3f} "
                      f"checkerboard x{r['checkerboard_ratio']:.2f} ({r['seconds']}s)", flush=True)  # fmt: skip

    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rows[mode]))

    keys = ("fid", "recall", "coverage", "precision", "checkerboard_ratio", "seconds")
    result = {
        "benchmark": "rgb_upsampling",
        "settings": {**vars(args), "photos": list(PHOTOS), "image_size": 32},
        "classifier": clf,
        "floor": {k: round(float(v), 4) for k, v in floor.items() if isinstance(v, int | float)},
        "real_checkerboard_share": real_share,
        "median": {mode: {k: median(mode, k) for k in keys} for mode in MODES},
        "runs": rows,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},  # fmt: skip
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    grid = np.concatenate([np.concatenate(list(grids[m].transpose(0, 2, 3, 1)), axis=1) for m in MODES if m in grids])
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(out.with_suffix(".png"))
    for mode in MODES:
        print(f"median {mode}: " + ", ".join(f"{k} {result['median'][mode][k]:.3f}" for k in keys))
    print(f"wrote {out} ({result['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
