"""Benchmark: StyleGAN2(-ADA) against the SNGAN ``resnet`` on the bundled digits.

    python bench/stylegan2_digits.py                                  # 3 seeds, 150 steps
    python bench/stylegan2_digits.py --steps 100 --seeds 0 1 2 --subset-steps 100   # quicker
    python bench/stylegan2_digits.py --source photo_patches --out bench/results/stylegan2_photos.json   # the RGB default

Three measurements, all through the project's trainer (``gan.training.GANTrainer``), the
``generate`` task and the project's metrics (``gan.evaluation.evaluate_generator``: FID,
precision/recall in the feature space of the pipeline's own digit classifier):

1. StyleGAN2 vs resnet (SNGAN, hinge, n_critic 1) at equal images shown (``--steps``
   steps of ``--batch`` real images each) and at equal wall clock (resnet trains for as
   many seconds as StyleGAN2 took); FID of G_ema, median over ``--seeds``.
2. Limited data: StyleGAN2 with ADA (target 0.6) vs without augmentation on a fixed
   ``--subset``-image subset of the training split (a task whose batch stream cycles the
   subset), ``--subset-steps`` steps; FID against the full validation split.
3. Truncation psi 1.0 -> 0.5 in w-space (per class) on the first seed's StyleGAN2:
   precision and recall at each psi.
4. Style checks on each seed's StyleGAN2 (G_ema), judged by the pipeline's digit
   classifier: how often the class of a sample stays when only its noise inputs are
   drawn again, and how often it changes when the coarse layers' styles (the 4x4 block:
   the first conv and its toRGB) or the fine layers' styles (the rest) are taken from a
   sample of another class. ``--style-only`` trains one StyleGAN2 per seed and runs only
   this part.

``--source photo_patches`` runs the same on the embedded RGB default (32x32 patches of six
bundled photographs, one class each; the featurize stage's classifier as the judge); the
style checks then read the coarse layers as the 4x4 and 8x8 blocks.

The figures to compare with (StudioGAN's CIFAR-10: SNGAN 9.0, StyleGAN2+ADA 2.31) come from
GPU runs thousands of times longer; this is a 2-core CPU at 8x8. Writes
bench/results/stylegan2_digits.json; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan.config import FeaturizeConfig, PrepareConfig, parse_params
from gan.data import load_split, prepare_dataset, read_manifest
from gan.evaluation import evaluate_generator
from gan.features import FeatureNet, train_feature_net
from gan.tasks.base import Batch
from gan.tasks.generate import GenerateTask
from gan.training import GANTrainer

RESULTS = Path(__file__).parent / "results" / "stylegan2_digits.json"


SOURCES = {"digits": {"image_size": 8}, "photo_patches": {"source": "photo_patches", "image_size": 32, "channels": 3}}


def params_for(arch: str, seed: int, batch: int, ada: bool = True, source: str = "digits") -> Any:
    """The two configurations: StyleGAN2 with the reference's optimiser, SNGAN as the project runs it."""
    model: dict[str, Any] = {"arch": arch, "conditional": True, "z_dim": 32, "g_width": 64, "d_width": 64}
    train: dict[str, Any] = {"batch_size": batch, "seed": seed, "mixed_precision": "none"}
    if arch == "stylegan2":
        model.update(loss="nonsaturating", stylegan2={"w_dim": 32, "mapping_layers": 2})
        # the reference's Adam (lr 0.0025, betas (0, 0.99)); ADA's p can move by 1 in 5k images (the reference: 500k)
        train.update(lr_G=0.0025, lr_D=0.0025, beta1=0.0, beta2=0.99, ema_decay=0.99,
                     stylegan2={"ada_target": 0.6 if ada else 0.0, "ada_kimg": 5.0})  # fmt: skip
    else:
        model.update(loss="hinge")
        train.update(lr_G=2e-4, lr_D=2e-4, beta1=0.0, beta2=0.9, ema_decay=0.99)
    return parse_params({"prepare": SOURCES[source], "model": model, "train": train})


class SubsetTask(GenerateTask):
    """The generate task on a fixed subset of the training split (limited data): batches cycle it, reshuffled each pass."""

    def __init__(self, params: Any, manifest: dict[str, Any], x: np.ndarray, y: np.ndarray) -> None:
        super().__init__(params, manifest)
        self.x, self.y = torch.from_numpy(np.asarray(x, dtype=np.float32)), torch.from_numpy(np.asarray(y)).long()

    def batches(self, data_dir: Any, rank: int, world_size: int, consumed: int) -> Iterator[Batch]:
        gen = torch.Generator().manual_seed(self.params.train.seed)
        b = self.params.train.batch_size
        while True:
            order = torch.randperm(len(self.x), generator=gen)
            for start in range(0, len(order) - b + 1, b):
                idx = order[start : start + b]
                yield {"image": self.x[idx], "label": self.y[idx]}


def train(params: Any, data: Path, steps: int | None = None, seconds: float | None = None,
          task: GenerateTask | None = None) -> tuple[GANTrainer, float]:  # fmt: skip
    """Train for ``steps`` steps or ``seconds`` of wall clock; returns the trainer and the seconds spent."""
    task = task or GenerateTask(params, read_manifest(data))
    trainer = GANTrainer(params, data, task=task)
    t0 = time.perf_counter()
    while (steps is not None and trainer.step < steps) or (seconds is not None and time.perf_counter() - t0 < seconds):
        trainer.train_step()
    return trainer, time.perf_counter() - t0


class Truncated(torch.nn.Module):
    """G with a fixed w-space truncation psi, for the metrics (they call ``G(z, y)``)."""

    def __init__(self, G: torch.nn.Module, psi: float) -> None:
        super().__init__()
        self.G, self.psi, self.z_dim, self.num_classes = G, psi, G.z_dim, G.num_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.G(z, y, truncation_psi=self.psi)


@torch.no_grad()
def style_checks(G: torch.nn.Module, feature_net: FeatureNet, n: int, seed: int, coarse: int = 2) -> dict[str, float]:
    """Class kept under noise resampling; class changed by swapping coarse vs fine styles (see the module docstring)."""
    G = G.eval()
    gen = torch.Generator().manual_seed(seed)
    z, z_other = torch.randn(n, G.z_dim, generator=gen), torch.randn(n, G.z_dim, generator=gen)
    y = torch.arange(n) % G.num_classes
    y_other = (y + torch.randint(1, G.num_classes, (n,), generator=gen)) % G.num_classes  # always another class
    ws, ws_other = G.mapping(z, y), G.mapping(z_other, y_other)  # [n, num_ws, w_dim]

    def classes(ws_: torch.Tensor, noise_seed: int) -> torch.Tensor:
        torch.manual_seed(noise_seed)  # the noise inputs of mode "random" come from the global generator
        return feature_net.logits(G.synthesis(ws_, "random")).argmax(1)

    base = classes(ws, 1)
    # coarse: the first `coarse` ws (8x8: ws[:, 0] the 4x4 conv, ws[:, 1] its toRGB; 32x32: 4 = 4x4 and 8x8)
    swap_coarse = torch.cat([ws_other[:, :coarse], ws[:, coarse:]], dim=1)
    swap_fine = torch.cat([ws[:, :coarse], ws_other[:, coarse:]], dim=1)
    return {
        "noise_resampled_class_kept": float((classes(ws, 2) == base).float().mean()),
        "coarse_swap_class_changed": float((classes(swap_coarse, 1) != base).float().mean()),
        "fine_swap_class_changed": float((classes(swap_fine, 1) != base).float().mean()),
        "num_ws": int(G.num_ws),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--subset", type=int, default=200)
    parser.add_argument("--subset-steps", type=int, default=150)
    parser.add_argument("--samples", type=int, default=1000, help="generated samples per evaluation")
    parser.add_argument("--psis", nargs="+", type=float, default=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    parser.add_argument("--style-samples", type=int, default=1000, help="samples per style check")
    parser.add_argument("--style-only", action="store_true", help="train one StyleGAN2 per seed and run only the style checks")
    parser.add_argument("--source", choices=sorted(SOURCES), default="digits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    coarse = 2 if args.source == "digits" else 4
    start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / args.source
        manifest = prepare_dataset(PrepareConfig(**SOURCES[args.source]), data)
        train_x, train_y = (np.array(a) for a in load_split(data, "train"))
        val_x, val_y = (np.array(a) for a in load_split(data, "val"))
        featurize = FeaturizeConfig(width=16, feature_dim=64, epochs=15) if args.source == "digits" else FeaturizeConfig(epochs=8)
        domain, clf = train_feature_net(train_x, train_y, val_x, val_y, len(manifest["class_names"]), featurize)
        feature_net = FeatureNet(domain, {"kind": "classifier"})
        print(f"classifier: val accuracy {clf['val_accuracy']:.4f}", flush=True)

        def fid(G: torch.nn.Module, seed: int) -> dict[str, float]:
            m = evaluate_generator(G.eval(), feature_net, val_x, val_y, args.samples, seed=seed)
            return {k: float(m[k]) for k in ("fid", "precision", "recall")}

        if args.style_only:
            rows = []
            for seed in args.seeds:
                sg, sg_s = train(params_for("stylegan2", seed, args.batch, source=args.source), data, steps=args.steps)
                rows.append({"seed": seed, "steps": sg.step, "seconds": round(sg_s, 1), **style_checks(sg.G_ema, feature_net, args.style_samples, seed, coarse)})
                print(f"seed {seed}: {rows[-1]}", flush=True)
            return _write_style_only(args, clf, rows, start)

        # 1. StyleGAN2 vs resnet: equal images shown, equal wall clock
        runs: dict[str, list[dict[str, Any]]] = {"stylegan2": [], "resnet_equal_images": [], "resnet_equal_time": []}
        kept_G = None
        style_rows = []
        for seed in args.seeds:
            sg, sg_s = train(params_for("stylegan2", seed, args.batch, source=args.source), data, steps=args.steps)
            runs["stylegan2"].append({"seed": seed, "steps": sg.step, "seconds": round(sg_s, 1), **fid(sg.G_ema, seed)})
            style_rows.append({"seed": seed, **style_checks(sg.G_ema, feature_net, args.style_samples, seed, coarse)})
            kept_G = kept_G or sg.G_ema
            rn, rn_s = train(params_for("resnet", seed, args.batch, source=args.source), data, steps=args.steps)
            runs["resnet_equal_images"].append({"seed": seed, "steps": rn.step, "seconds": round(rn_s, 1), **fid(rn.G_ema, seed)})
            rt, rt_s = train(params_for("resnet", seed, args.batch, source=args.source), data, seconds=sg_s)
            runs["resnet_equal_time"].append({"seed": seed, "steps": rt.step, "seconds": round(rt_s, 1), **fid(rt.G_ema, seed)})
            print(f"seed {seed}: " + "  ".join(f"{k} FID {v[-1]['fid']:.2f} ({v[-1]['steps']} steps, {v[-1]['seconds']}s)" for k, v in runs.items()), flush=True)

        # 2. limited data: ADA vs none on a fixed subset
        rng = np.random.default_rng(0)
        pick = rng.choice(len(train_x), size=args.subset, replace=False)
        limited: dict[str, list[dict[str, Any]]] = {"ada": [], "none": []}
        for seed in args.seeds:
            for name, ada in (("ada", True), ("none", False)):
                p = params_for("stylegan2", seed, args.batch, ada=ada, source=args.source)
                task = SubsetTask(p, read_manifest(data), train_x[pick], train_y[pick])
                tr, s = train(p, data, steps=args.subset_steps, task=task)
                final_p = float(task.state_dict()["ada_p"])
                limited[name].append({"seed": seed, "steps": tr.step, "seconds": round(s, 1), "ada_p": round(final_p, 4), **fid(tr.G_ema, seed)})
            print(f"subset seed {seed}: ADA FID {limited['ada'][-1]['fid']:.2f} (p {limited['ada'][-1]['ada_p']})  none FID {limited['none'][-1]['fid']:.2f}", flush=True)

        # 3. truncation sweep on the first seed's StyleGAN2
        sweep = []
        for psi in args.psis:
            m = fid(Truncated(kept_G, psi), 0)
            sweep.append({"psi": psi, **m})
            print(f"psi {psi:.2f}: precision {m['precision']:.3f} recall {m['recall']:.3f} FID {m['fid']:.2f}", flush=True)

    def median(rows: list[dict[str, Any]]) -> float:
        return float(statistics.median(r["fid"] for r in rows))

    precisions, recalls = [r["precision"] for r in sweep], [r["recall"] for r in sweep]
    result = {
        "benchmark": "stylegan2_digits",
        "settings": {**vars(args), **SOURCES[args.source]},
        "classifier": clf,
        "equal_budget": {k: {"median_fid": median(v), "runs": v} for k, v in runs.items()},
        "limited_data": {k: {"median_fid": median(v), "runs": v} for k, v in limited.items()},
        "truncation": {"rows": sweep,
                       "precision_rises": all(b >= a for a, b in zip(precisions, precisions[1:], strict=False)),
                       "recall_falls": all(b <= a for a, b in zip(recalls, recalls[1:], strict=False))},  # fmt: skip
        "style_checks": _style_summary(style_rows),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": _machine(args),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    medians = {**result["equal_budget"], **{f"subset_{k}": v for k, v in result["limited_data"].items()}}
    print("median FID: " + ", ".join(f"{k} {v['median_fid']:.2f}" for k, v in medians.items()))
    print(f"wrote {out} ({result['wall_seconds']:.0f}s)")
    return 0


def _machine(args: Any) -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__, "threads": args.threads}


def _style_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("noise_resampled_class_kept", "coarse_swap_class_changed", "fine_swap_class_changed")
    return {"median": {k: float(statistics.median(r[k] for r in rows)) for k in keys}, "runs": rows}


def _write_style_only(args: Any, clf: dict[str, Any], rows: list[dict[str, Any]], start: float) -> int:
    """``--style-only``: bench/results/stylegan2_style.json beside the full run's file."""
    out = Path(args.out).with_name("stylegan2_style.json") if args.out == str(RESULTS) else Path(args.out)
    result = {"benchmark": "stylegan2_style", "settings": {**vars(args), **SOURCES[args.source]}, "classifier": clf,
              "style_checks": _style_summary(rows), "wall_seconds": round(time.perf_counter() - start, 1),
              "machine": _machine(args)}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("median: " + ", ".join(f"{k} {v:.3f}" for k, v in result["style_checks"]["median"].items()))
    print(f"wrote {out} ({result['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
