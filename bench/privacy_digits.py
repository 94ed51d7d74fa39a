"""Benchmark: memorisation audit and DP-SGD utility on the digits (privacy figures of docs/benchmarks.md).

    python bench/privacy_digits.py                          # default config + DP at eps 1, 10, inf; 1500 steps
    python bench/privacy_digits.py --steps 300 --seed 0     # quicker

Trains through the project's own trainer (gan.training.fit_task, one in-process worker)
on the bundled scikit-learn digits prepared at 16x16 (1,438 train / 359 validation):

- ``default``: params.yaml's model and train sections as they are (DCGAN, spectrally
  normalised D, hinge loss) with the learning rates tune chose in the default pipeline
  (``--lr-G 1.7e-3 --lr-D 1.2e-3``, docs/benchmarks.md); its audit is the "default pipeline's champion passes"
  figure (share closer to training <= 0.55, membership AUROC <= 0.55).
- ``dp-eps1``, ``dp-eps10``: DP-SGD on D (train.privacy with target_epsilon at
  delta 1e-5, noise from the RDP accountant, clipping norm 1), GroupNorm D without
  spectral norm (Opacus cannot train it), and ``dp-epsinf`` the same network without
  DP: the utility curve's non-private end.

Each run is scored like the evaluate stage (FID in the domain feature space of a
feature network trained here, 1,000 samples), by CAS (Ravuri & Vinyals 2019: a small
classifier trained on 100 synthetic images per class, accuracy on the real validation
split; chance is 0.10) and by the full privacy audit (gan.privacy, with D's LOGAN
attack). Anchors: GS-WGAN on MNIST at eps 10, FID 61.3 (Inception-space, 28x28, not
comparable in scale); DP-MERF and DataLens report MNIST CAS at eps 1 and 10.
Writes bench/results/privacy_digits.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan.augment.cas import classification_accuracy
from gan.config import FeaturizeConfig, PrepareConfig, load_params, parse_params
from gan.data import load_split, prepare_dataset, read_manifest
from gan.evaluation import evaluate_generator
from gan.features import FeatureNet, load_feature_net, save_feature_net, train_feature_net
from gan.privacy import audit_generator
from gan.training import fit_task, make_trainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "privacy_digits.json"
EPSILONS = (1.0, 10.0, None)  # None: the same network without DP (eps = inf)
DELTA = 1e-5


def run_params(base: dict[str, Any], steps: int, seed: int, epsilon: float | None, private_arch: bool, lrs: tuple[float, float]) -> Any:
    """params.yaml's model/train with ``steps``, ``seed`` and learning rates; the DP architecture (GroupNorm D) and DP-SGD at ``epsilon``."""
    raw = json.loads(json.dumps(base))
    raw["train"].update({"lr_G": lrs[0], "lr_D": lrs[1], "steps": steps, "seed": seed, "log_every": max(1, steps // 5), "checkpoint_every": steps, "sample_every": steps,
                         "eval_every": 0, "num_workers": 1, "use_gpu": False})  # fmt: skip
    raw["tune"]["enabled"] = False
    if private_arch:
        raw["model"]["spectral_norm_D"] = False
    if epsilon is not None:
        raw["train"]["privacy"] = {"enabled": True, "target_epsilon": epsilon, "delta": DELTA, "max_grad_norm": 1.0}
    return parse_params(raw)


def cas(G: torch.nn.Module, num_classes: int, val_x: np.ndarray, val_y: np.ndarray, seed: int) -> float:
    """Classification Accuracy Score: a classifier trained on 100 samples per class of G, tested on real validation images."""
    from gan.privacy import generate_samples

    labels = [k for k in range(num_classes) for _ in range(100)]
    x = generate_samples(G, len(labels), seed, labels)
    return classification_accuracy(x, np.array(labels), val_x, val_y, num_classes, epochs=30, batch_size=64, lr=1e-3, seed=seed)


def one_run(name: str, params: Any, data: Path, feature_net: FeatureNet, seed: int) -> dict[str, Any]:
    train_x, train_y = load_split(data, "train")
    val_x, val_y = load_split(data, "val")
    t0 = time.perf_counter()
    trainer = make_trainer(params, data)
    summary = fit_task(params, data, trainer=trainer, log=None)
    train_s = time.perf_counter() - t0
    G, D = trainer.G_ema, trainer.network("D")
    scores = evaluate_generator(G, feature_net, val_x, val_y, 1000, seed=seed, kid_subset_size=300)
    figures, *_ = audit_generator(G, D, feature_net, train_x, train_y, val_x, val_y, 1000, seed=seed)
    row = {
        "run": name,
        "epsilon": summary["last"].get("privacy/epsilon", float("inf")),
        "noise_multiplier": summary["last"].get("privacy/noise_multiplier", 0.0),
        "fid": scores["fid"],
        "conditional_accuracy": scores.get("conditional_accuracy", float("nan")),
        "cas": cas(G, int(read_manifest(data)["num_classes"]), val_x, val_y, seed),
        **{f"privacy/{k}": v for k, v in figures.items()},
        "train_s": round(train_s, 1),
        "steps": summary["step"],
    }
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = "| run | eps | sigma | FID | CAS | cond. acc. | share px | share feat | ratio p5 px | MIA D (LOGAN) | MIA dist | train s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    lines = [
        f"| {r['run']} | {r['epsilon']:.2f} | {r['noise_multiplier']:.2f} | {r['fid']:.2f} | {r['cas']:.3f} | {r['conditional_accuracy']:.3f} | {r['privacy/dcr_share/pixel']:.3f} | "
        f"{r['privacy/dcr_share/feature']:.3f} | {r['privacy/dcr_ratio_p5/pixel']:.3f} | {r['privacy/mia_auroc/discriminator']:.3f} | "
        f"{r['privacy/mia_auroc/distance']:.3f} | {r['train_s']:.0f} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="G steps per run (params.yaml: 1500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr-G", type=float, default=1.7e-3, help="the rate tune chose in the default pipeline (docs/benchmarks.md)")
    parser.add_argument("--lr-D", type=float, default=1.2e-3)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--runs", default="default,dp-eps1,dp-eps10,dp-epsinf", help="comma-separated subset of the runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    base = load_params(ROOT / "params.yaml").model_dump(mode="json")
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="privacy-bench-") as tmp:
        data = Path(tmp) / "prepared"
        prepare_dataset(PrepareConfig(**{**base["prepare"], "out": str(data)}), data)
        train_x, train_y = load_split(data, "train")
        val_x, val_y = load_split(data, "val")
        manifest = read_manifest(data)
        domain, _ = train_feature_net(train_x, train_y, val_x, val_y, int(manifest["num_classes"]), FeaturizeConfig(**base["featurize"]))
        # the featurize stage's own files, loaded back as the evaluate stage loads them
        save_feature_net(domain, Path(tmp) / "features", {"class_names": manifest["class_names"], "data_hash": manifest["hash"], "inception": None})
        feature_net = load_feature_net(Path(tmp) / "features")
        wanted = args.runs.split(",")
        plan = [("default", None, False)] + [(f"dp-eps{'inf' if e is None else int(e)}", e, True) for e in EPSILONS]
        for name, eps, private_arch in plan:
            if name in wanted:
                rows.append(one_run(name, run_params(base, args.steps, args.seed, eps, private_arch, (args.lr_G, args.lr_D)), data, feature_net, args.seed))
    wall = time.perf_counter() - start
    out = {"rows": rows, "steps": args.steps, "seed": args.seed, "lr_G": args.lr_G, "lr_D": args.lr_D, "wall_s": round(wall, 1), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
           "python": platform.python_version(), "torch": torch.__version__}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(table(rows))
    print(f"wall {wall:.0f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
