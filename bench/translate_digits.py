"""Benchmark: CycleGAN on the embedded digits domains (plain <-> dilated + inverted), median of 3 seeds.

    nice -n 10 python bench/translate_digits.py                              # 16 px, 2000 steps, seeds 0 1 2
    nice -n 10 python bench/translate_digits.py --image-size 8 --steps 300   # the reduced scale

Prepares ``digits_domains`` at ``--image-size``, trains the featurize stage's domain
classifier (the target-domain judge; ``featurize`` defaults), then for each seed trains
CycleGAN through the project's trainer (:func:`gan.training.fit`, one process, CPU) and
scores the final generators with the task's own evaluation on the validation split:
target-domain accuracy, content preservation (a digit judge fitted on real images of
both domains), cycle L1, FID in the domain feature space, PSNR/SSIM against the oracle.
The same is reported for the untranslated sources and for the oracle T(A) (the task's
real floor). An ablation with ``lambda_cyc = 0`` (and so no identity term) runs beside
it. Reports medians over seeds, wall time per run and the machine; writes
bench/results/translate_digits.json.
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
RESULTS = ROOT / "bench" / "results" / "translate_digits.json"
KEYS = ("target_accuracy", "content_accuracy", "cycle_l1", "fid", "psnr", "ssim")


def run(args: argparse.Namespace) -> dict:
    import torch

    from gan.config import FeaturizeConfig, PrepareConfig, parse_params
    from gan.data import load_split, prepare_dataset, read_manifest
    from gan.features import load_feature_net, save_feature_net, train_feature_net
    from gan.tasks import make_task
    from gan.tasks.base import EvalSettings
    from gan.training import GANTrainer, fit

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-translate-"))
    data = work / "prepared"
    prepare_dataset(PrepareConfig(source="digits_domains", image_size=args.image_size), data)
    manifest = read_manifest(data)
    (tx, ty), (vx, vy) = load_split(data, "train"), load_split(data, "val")
    net, feat_metrics = train_feature_net(tx, ty, vx, vy, 2, FeaturizeConfig())
    save_feature_net(net, work / "features", {"class_names": manifest["class_names"]})
    feature_net = load_feature_net(work / "features")
    settings = EvalSettings(num_samples=1000, seed=0, batch_size=500)

    def params(seed: int, lambda_cyc: float):
        return parse_params({
            "prepare": {"source": "digits_domains", "image_size": args.image_size},
            "model": {"task": "translate", "g_width": args.width, "d_width": args.width,
                      "translate": {"arch": "cyclegan", "n_blocks": args.blocks, "d_layers": args.d_layers, "lambda_cyc": lambda_cyc}},
            "train": {"batch_size": args.batch_size, "steps": args.steps, "log_every": max(1, args.steps // 4),
                      "checkpoint_every": args.steps, "sample_every": args.steps, "divergence_patience": 10**6, "seed": seed,
                      "mixed_precision": "none"},
        })  # fmt: skip

    base_task = make_task(params(0, 10.0), manifest)
    identity = {"G_AB": torch.nn.Identity(), "G_BA": torch.nn.Identity()}
    out: dict = {"untranslated": base_task.evaluate(identity, feature_net, data, settings),
                 "oracle": base_task.real_floor(feature_net, data, settings), "runs": {}}  # fmt: skip
    for label, lambda_cyc in (("cyclegan", 10.0), ("lambda_cyc=0", 0.0)):
        rows = []
        for seed in args.seeds:
            p = params(seed, lambda_cyc)
            task = make_task(p, manifest)
            torch.manual_seed(seed)
            trainer = GANTrainer(p, data, task=task)
            start = time.perf_counter()
            fit(p, data, trainer=trainer, log=None)
            wall = time.perf_counter() - start
            scores = task.evaluate(trainer.exported_networks(), feature_net, data, settings)
            rows.append({"seed": seed, "wall_s": round(wall, 1), **{k: scores[k] for k in KEYS}})
            print(f"{label} seed {seed}: " + ", ".join(f"{k} {scores[k]:.3f}" for k in KEYS) + f" ({wall:.0f}s)", flush=True)
        out["runs"][label] = {"seeds": rows, "median": {k: statistics.median(r[k] for r in rows) for k in (*KEYS, "wall_s")}}
    out["settings"] = vars(args) | {"feature_val_accuracy": feat_metrics.get("val_accuracy")}
    out["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "load_avg_1m": os.getloadavg()[0], "torch_threads": args.threads}  # fmt: skip
    return out


def table(result: dict) -> str:
    lines = [f"{'':<16}" + "".join(f"{k:>18}" for k in (*KEYS, "wall_s"))]
    for label, scores in (("untranslated", result["untranslated"]), ("oracle T(A)", result["oracle"])):
        lines.append(f"{label:<16}" + "".join(f"{scores.get(k, float('nan')):>18.3f}" for k in KEYS))
    for label, run_ in result["runs"].items():
        lines.append(f"{label + ' (median)':<16}" + "".join(f"{run_['median'][k]:>18.3f}" for k in (*KEYS, "wall_s")))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--d-layers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = run(args)
    print(table(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
