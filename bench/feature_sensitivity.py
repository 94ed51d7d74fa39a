"""Benchmark: can the FID feature space see blur and noise? Classifier alone vs classifier + reconstruction.

    python bench/feature_sensitivity.py                     # 3 seeds, both data sets
    python bench/feature_sensitivity.py --seeds 0           # quicker

The pipeline's FID/KID live in the feature space of the featurize stage's domain network.
Trained on cross-entropy alone, a network for a data set with few classes keeps only what
separates them: an outside probe measured, on a two-class set, real images blurred by
0.7 px scoring an FID *below* the real-vs-real floor. ``featurize.reconstruction_weight``
``featurize.quality_weight`` adds a self-supervised head that tells sharp, blurred and noisy
images apart (``gan.features.degrade``). For each data set, weight 0 (classifier only),
the default 0.1 and 1.0, per seed (``featurize.seed``):

* ``blur_ratio``: FID of the validation split blurred by 0.7 px against the training split,
  divided by the real-vs-real floor (``gan.sensitivity``; the featurize stage's report);
* ``noise_ratio``: the same for Gaussian noise of 0.1;
* the classifier's validation accuracy (what conditional accuracy and the per-class
  metrics rest on).

Data sets: ``patches`` (two classes: 32x32 RGB patches of the bundled photographs chelsea
and coffee, as in bench/rgb_upsampling.py) and ``digits`` (ten classes, 16x16). Medians
over ``--seeds`` with the wall time and the machine; writes
bench/results/feature_sensitivity.json; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan.config import FeaturizeConfig, PrepareConfig
from gan.data import load_split, prepare_dataset
from gan.features import FeatureNet, train_feature_net
from gan.sensitivity import sensitivity

sys.path.insert(0, str(Path(__file__).parent))
from rgb_upsampling import PHOTOS, patches  # noqa: E402  (the same two-photograph data set)

RESULTS = Path(__file__).parent / "results" / "feature_sensitivity.json"
WEIGHTS = (0.0, 0.1, 1.0)


def prepared(name: str, root: Path, per_class: int) -> Path:
    """The prepared data set ``name`` (patches or digits) under ``root``."""
    out = root / name
    if name == "digits":
        prepare_dataset(PrepareConfig(image_size=16), out)
        return out
    x = np.concatenate([patches(photo, per_class, 32, 96, seed=k) for k, photo in enumerate(PHOTOS)])
    y = np.repeat(np.arange(len(PHOTOS)), per_class)
    np.savez(root / "patches.npz", x=x, y=y)
    prepare_dataset(PrepareConfig(source="npz", path=str(root / "patches.npz"), image_size=32, channels=3), out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["patches", "digits"])
    parser.add_argument("--per-class", type=int, default=1000, help="patches per photograph")
    parser.add_argument("--weights", nargs="+", type=float, default=list(WEIGHTS), help="featurize.quality_weight values")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "feature_sensitivity", "settings": vars(args), "datasets": {}}

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data = prepared(name, Path(tmp), args.per_class)
            train_x, train_y = (np.array(a) for a in load_split(data, "train"))
            val_x, val_y = (np.array(a) for a in load_split(data, "val"))
            classes = int(train_y.max()) + 1
            runs: dict[str, list[dict[str, Any]]] = {str(w): [] for w in args.weights}
            for seed in args.seeds:
                for weight in args.weights:
                    t0 = time.perf_counter()
                    cfg = FeaturizeConfig(seed=seed, quality_weight=weight)
                    domain, metrics = train_feature_net(train_x, train_y, val_x, val_y, classes, cfg)
                    report = sensitivity(FeatureNet(domain, {"kind": "classifier"}), train_x, val_x, seed=seed)
                    floor = report["sensitivity/fid_floor"]
                    runs[str(weight)].append({
                        "seed": seed, "val_accuracy": round(metrics["val_accuracy"], 4), "fid_floor": round(floor, 4),
                        "blur_ratio": round(report["sensitivity/blur_ratio"], 3),
                        "noise_ratio": round(report["sensitivity/fid_noise"] / floor, 3),
                        "seconds": round(time.perf_counter() - t0, 1),
                    })  # fmt: skip
                    r = runs[str(weight)][-1]
                    print(f"{name} seed {seed} weight {weight}: blur x{r['blur_ratio']:.2f} noise x{r['noise_ratio']:.2f} "
                          f"accuracy {r['val_accuracy']:.4f} ({r['seconds']}s)", flush=True)  # fmt: skip
            result["datasets"][name] = {
                "classes": classes,
                "median": {w: {k: float(statistics.median(r[k] for r in rows)) for k in ("blur_ratio", "noise_ratio", "val_accuracy", "fid_floor")}
                           for w, rows in runs.items()},  # fmt: skip
                "runs": runs,
            }
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__, "threads": args.threads}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, d in result["datasets"].items():
        for w, m in d["median"].items():
            print(f"median {name} weight {w}: blur x{m['blur_ratio']:.2f}, noise x{m['noise_ratio']:.2f}, accuracy {m['val_accuracy']:.4f}")
    print(f"wrote {out} ({result['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
