"""Benchmark: anomaly detection on scikit-learn digits, one digit anomalous (the GANomaly MNIST protocol).

    python bench/detect_digits.py                                  # 10 digits x 3 seeds, both methods, 600 steps, 8x8
    python bench/detect_digits.py --steps 600 --methods ganomaly   # the run in docs/benchmarks.md (~30 s a run here)
    python bench/detect_digits.py --digits 1 3 --seeds 0 --steps 100   # quicker

For each digit d: prepare with ``prepare.anomaly_classes: [d]`` (train/val: the other nine
digits only; test: held-out normal images and every d), then per seed train GANomaly and
f-AnoGAN in-process (the trainer Ray Train runs, on one worker) and evaluate them on the
test split with the task's own evaluation (AUROC, average precision); the PCA-20
reconstruction baseline (fitted on the normal training images) is the task's
``real_floor``, so the same code measures all three. The discriminator-score baseline
(-D(x)) of each trained D is reported beside its method.

Reported per digit: the median AUROC over seeds for each method, the PCA-20 AUROC, and
the wall time per run (training + evaluation). Then the mean over digits and the worst
digit. Finally the scoring throughput of ``gan score`` (npz in, CSV out) against a bare
loop of the same model over the same images already in memory (target >= 0.9).
Writes bench/results/detect_digits.json with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "detect_digits.json"


def params_for(method: str, digit: int, seed: int, args: argparse.Namespace) -> Any:
    from gan.config import parse_params

    train: dict[str, Any] = {"batch_size": args.batch_size, "steps": args.steps, "seed": seed, "log_every": args.steps,
                             "checkpoint_every": args.steps, "sample_every": 10**9}  # fmt: skip
    detect: dict[str, Any] = {"method": method}
    if method == "fanogan":  # the reference's WGAN-GP settings: Adam 1e-4, betas (0, 0.9), 5 critic steps
        train.update(lr_G=1e-4, lr_D=1e-4, beta1=0.0, beta2=0.9, n_critic=5)
        detect["encoder_steps"] = args.steps // 2
    return parse_params({
        "prepare": {"image_size": args.size, "anomaly_classes": [str(digit)]},
        "model": {"task": "detect", "z_dim": args.z_dim, "g_width": args.width, "d_width": args.width, "detect": detect},
        "train": train,
    })  # fmt: skip


def train_and_evaluate(params: Any, data: Path) -> tuple[dict[str, float], dict[str, Any], float]:
    """(test metrics, exported networks, wall seconds) of one run."""
    from gan.data import read_manifest
    from gan.tasks import make_task
    from gan.tasks.base import EvalSettings
    from gan.training import GANTrainer, fit

    start = time.perf_counter()
    task = make_task(params, read_manifest(data))
    trainer = GANTrainer(params, data, task=task)
    fit(params, data, trainer=trainer, log=None)
    nets = {k: v.eval() for k, v in trainer.exported_networks().items()}
    metrics = task.evaluate(nets, None, data, EvalSettings(num_samples=1))
    return metrics, {"task": task, "nets": nets}, time.perf_counter() - start


def throughput(run: dict[str, Any], data: Path, n: int, batch_size: int, repeat: int) -> dict[str, float]:
    """images/s of `gan score` (npz -> CSV) against a bare loop of anomaly_scores over the same images in memory."""
    import torch

    from gan.data import load_split
    from gan.detect import load, score_to_csv
    from gan.inference.detect import anomaly_scores

    task, nets = run["task"], run["nets"]
    x, _ = load_split(data, "test")
    images = np.rint((np.array(x) + 1.0) * 127.5).astype(np.uint8)
    images = np.resize(images, (n, *images.shape[1:]))  # tiled to n images
    with tempfile.TemporaryDirectory() as tmp:
        from gan.export import save_networks

        networks = {k: task.network_specs()[k] for k in task.exported}
        spec = {"task": "detect", "inference": "detect", "networks": networks, **task.export_spec(), **task.calibrate(nets, data)}
        save_networks(nets, spec, Path(tmp) / "model")
        np.savez(Path(tmp) / "in.npz", x=images[:, 0])
        model = load(str(Path(tmp) / "model"))
        tensor = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
        bare, cli = [], []
        for _ in range(repeat):  # alternating, best of each: the machine is shared
            t = time.perf_counter()
            for i in range(0, n, batch_size):
                anomaly_scores(model.nets, model.spec, tensor[i : i + batch_size])
            bare.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            score_to_csv(model, Path(tmp) / "in.npz", Path(tmp) / "scores.csv", batch_size)
            cli.append(n / (time.perf_counter() - t))
    return {"images": n, "batch_size": batch_size, "bare_img_s": max(bare), "gan_score_img_s": max(cli), "ratio": max(cli) / max(bare)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["ganomaly", "fanogan"])
    parser.add_argument("--size", type=int, default=8, help="image size (the digits are 8x8)")
    parser.add_argument("--steps", type=int, default=600, help="train.steps per run (f-AnoGAN: half GAN, half encoder)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--z-dim", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--throughput-n", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset
    from gan.tasks.base import EvalSettings

    rows: list[dict[str, Any]] = []
    last_run: dict[str, Any] = {}
    last_data: Path | None = None
    with tempfile.TemporaryDirectory() as root:
        for digit in args.digits:
            data = Path(root) / f"digits{args.size}-anomaly{digit}"
            prepare_dataset(PrepareConfig(image_size=args.size, anomaly_classes=[str(digit)]), data)
            row: dict[str, Any] = {"digit": digit}
            for method in args.methods:
                runs = []
                for seed in args.seeds:
                    metrics, run, wall = train_and_evaluate(params_for(method, digit, seed, args), data)
                    runs.append({"seed": seed, "auroc": metrics["auroc"], "average_precision": metrics["average_precision"],
                                 "d_score_auroc": metrics.get("d_score/auroc"), "fpr": metrics["fpr"], "tpr": metrics["tpr"], "wall_s": wall})  # fmt: skip
                    last_run, last_data = run, data
                    print(f"digit {digit} {method:8s} seed {seed}: auroc {metrics['auroc']:.3f} (-D(x) {metrics.get('d_score/auroc', float('nan')):.3f}) "
                          f"in {wall:.1f}s", flush=True)  # fmt: skip
                row[method] = {"median_auroc": statistics.median(r["auroc"] for r in runs),
                               "median_d_score_auroc": statistics.median(r["d_score_auroc"] for r in runs),
                               "median_wall_s": statistics.median(r["wall_s"] for r in runs), "runs": runs}  # fmt: skip
            floor = last_run["task"].real_floor(None, data, EvalSettings(num_samples=1))
            row["pca20"] = {"auroc": floor["auroc"], "average_precision": floor["average_precision"]}
            rows.append(row)
        tput = throughput(last_run, last_data, args.throughput_n, 256, repeat=3) if last_data else {}

    summary = {m: {"mean_auroc": statistics.mean(r[m]["median_auroc"] for r in rows), "min_auroc": min(r[m]["median_auroc"] for r in rows),
                   "mean_d_score_auroc": statistics.mean(r[m]["median_d_score_auroc"] for r in rows),
                   "median_wall_s": statistics.median(r[m]["median_wall_s"] for r in rows)} for m in args.methods}  # fmt: skip
    summary["pca20"] = {"mean_auroc": statistics.mean(r["pca20"]["auroc"] for r in rows), "min_auroc": min(r["pca20"]["auroc"] for r in rows)}
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "torch_threads": args.threads, "torch": torch.__version__}  # fmt: skip
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "machine": machine,
              "rows": rows, "summary": summary, "throughput": tput}  # fmt: skip

    print(f"\n{'digit':>5} " + " ".join(f"{m:>10}" for m in args.methods) + f" {'PCA-20':>8} " + " ".join(f"{m + ' s':>12}" for m in args.methods))
    for r in rows:
        print(f"{r['digit']:>5} " + " ".join(f"{r[m]['median_auroc']:>10.3f}" for m in args.methods) + f" {r['pca20']['auroc']:>8.3f} "
              + " ".join(f"{r[m]['median_wall_s']:>12.1f}" for m in args.methods))  # fmt: skip
    print(f"{'mean':>5} " + " ".join(f"{summary[m]['mean_auroc']:>10.3f}" for m in args.methods) + f" {summary['pca20']['mean_auroc']:>8.3f}")
    print(f"{'min':>5} " + " ".join(f"{summary[m]['min_auroc']:>10.3f}" for m in args.methods) + f" {summary['pca20']['min_auroc']:>8.3f}")
    if tput:
        print(f"gan score {tput['gan_score_img_s']:.0f} img/s vs bare loop {tput['bare_img_s']:.0f} img/s: ratio {tput['ratio']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
