"""Benchmark: translation on the embedded digits domains, median of 3 seeds: CycleGAN, pix2pix, StarGAN.

    nice -n 10 python bench/translate_digits.py                              # CycleGAN, 16 px, 2000 steps, seeds 0 1 2
    nice -n 10 python bench/translate_digits.py --image-size 8 --steps 300   # the reduced scale
    nice -n 10 python bench/translate_digits.py --lambda-id 0.5 --no-ablation \
        --out bench/results/translate_digits_identity.json                    # with the reference's identity term
    nice -n 10 python bench/translate_digits.py --arch pix2pix --out bench/results/translate_pix2pix.json
    nice -n 10 python bench/translate_digits.py --arch stargan --out bench/results/translate_stargan.json
    nice -n 10 python bench/translate_digits.py --arch stargan --adversarial lsgan --out bench/results/translate_stargan_lsgan.json
    nice -n 10 python bench/translate_digits.py --arch stargan --targets other ...   # targets never the image's own domain

Prepares ``digits_domains`` at ``--image-size`` with the architecture's example domains
(docs/examples/translate-*.yaml), trains the featurize stage's domain classifier (the
target-domain judge; ``featurize`` defaults), then for each seed trains the architecture
through the project's trainer (:func:`gan.training.fit`, one process, CPU) and scores
the final generators with the task's own evaluation on the validation split:
target-domain accuracy, content preservation (the task's RBF-SVM digit judge fitted on
real images of every domain), cycle L1, FID in the domain feature space, PSNR/SSIM
against the oracle, and the worst domain pair's accuracies. The same is reported for the
untranslated sources and for the oracle T(A) (the task's real floor). Beside CycleGAN,
an ablation with ``lambda_cyc = 0``; beside pix2pix, the same U-Net trained with L1 alone
in a plain PyTorch loop; for StarGAN, its G's parameter count against the k(k-1)
CycleGAN generators it replaces. Reports medians over seeds, wall time per run and the
machine; writes ``--out`` (default bench/results/translate_digits.json).
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "translate_digits.json"
KEYS = ("target_accuracy", "content_accuracy", "cycle_l1", "fid", "psnr", "ssim")


# each architecture's embedded default (docs/examples/translate-*.yaml)
DOMAINS = {"cyclegan": ["plain", "dilated_inverted"], "pix2pix": ["plain", "dilated_inverted"], "stargan": ["plain", "inverted", "dilated"]}


class Unchanged(torch.nn.Module):
    """The untranslated baseline in a generator's place (StarGAN's G also takes the target domain)."""

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return x


def arch_params(args: argparse.Namespace, seed: int, **translate: float) -> dict:
    """The params of one run: the architecture's example recipe at the benchmark's size."""
    model = {"arch": args.arch, "n_blocks": args.blocks, "d_layers": args.d_layers, **translate}
    train = {"batch_size": args.batch_size, "steps": args.steps, "log_every": max(1, args.steps // 4), "checkpoint_every": args.steps,
             "sample_every": args.steps, "divergence_patience": 10**6, "seed": seed, "mixed_precision": "none"}  # fmt: skip
    if args.arch == "stargan" and args.adversarial == "lsgan":  # CycleGAN's LSGAN recipe
        train |= {"n_critic": 1, "lr_G": 2e-4, "lr_D": 2e-4, "beta1": 0.5, "beta2": 0.999}
    elif args.arch == "stargan":  # the reference's WGAN-GP recipe
        train |= {"n_critic": 5, "lr_G": 1e-4, "lr_D": 1e-4, "beta1": 0.5, "beta2": 0.999}
    return {"prepare": {"source": "digits_domains", "domains": (args.domains or DOMAINS[args.arch]), "image_size": args.image_size},
            "model": {"task": "translate", "g_width": args.width, "d_width": args.width, "translate": model}, "train": train}  # fmt: skip


def variants(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    """(label, model.translate overrides) of each trained model."""
    if args.arch == "cyclegan":
        runs = [("cyclegan", {"lambda_cyc": 10.0, "lambda_id": args.lambda_id}), ("lambda_cyc=0", {"lambda_cyc": 0.0, "lambda_id": args.lambda_id})]
        return runs[: 1 if args.no_ablation else 2]
    if args.arch == "stargan":
        label = f"stargan ({args.adversarial}, targets {args.targets}{f', identity {args.lambda_idt:g}' if args.lambda_idt else ''})"
        return [(label, {"adversarial": args.adversarial, "lambda_idt": args.lambda_idt, "targets": args.targets})]
    return [(args.arch, {})]


def l1_unet(task, data: Path, args: argparse.Namespace, seed: int) -> dict[str, torch.nn.Module]:
    """pix2pix's baseline: the same U-Net trained on the same pairs with L1 alone, as a plain
    PyTorch loop (Adam 2e-4, beta1 0.5, constant then linear decay, as the task's schedule)."""
    from gan.models import build_network

    spec = task.network_specs()["G"]
    torch.manual_seed(seed)
    G = build_network(spec["network"], **spec["kwargs"])
    opt = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    const = round(task.cfg.decay_start * args.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - max(0, step - const) / max(1, args.steps - const))
    batches = task.batches(data, 0, 1, 0)
    for _ in range(args.steps):
        batch = next(batches)
        loss = (G(batch["A"]) - batch["B"]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {name: G.eval() for name in task.exported}  # pix2pix exports its G as G_AB


def summarise(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k != "seed"]
    return {"seeds": rows, "median": {k: statistics.median(r[k] for r in rows) for k in keys}}


def run(args: argparse.Namespace) -> dict:
    from gan.config import FeaturizeConfig, PrepareConfig, parse_params
    from gan.data import load_split, prepare_dataset, read_manifest
    from gan.features import load_feature_net, save_feature_net, train_feature_net
    from gan.models import build_network
    from gan.tasks import make_task
    from gan.tasks.base import EvalSettings
    from gan.training import GANTrainer, fit

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-translate-"))
    data = work / "prepared"
    domains = (args.domains or DOMAINS[args.arch])
    prepare_dataset(PrepareConfig(source="digits_domains", domains=domains, image_size=args.image_size), data)
    manifest = read_manifest(data)
    (tx, ty), (vx, vy) = load_split(data, "train"), load_split(data, "val")
    net, feat_metrics = train_feature_net(tx, ty, vx, vy, len(domains), FeaturizeConfig())
    save_feature_net(net, work / "features", {"class_names": manifest["class_names"]})
    feature_net = load_feature_net(work / "features")
    settings = EvalSettings(num_samples=1000, seed=0, batch_size=500)

    def scored(task, nets: dict, seed: int, wall: float, label: str) -> dict:
        scores = task.evaluate(nets, feature_net, data, settings)
        row = {"seed": seed, "wall_s": round(wall, 1), **{k: scores[k] for k in KEYS if k in scores}}
        for name in ("target_accuracy", "content_accuracy"):  # the worst domain pair: StarGAN's target is for every one
            row[f"{name}_worst_pair"] = min(v for k, v in scores.items() if k.startswith(f"{name}/"))
        print(f"{label} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "seed"), flush=True)
        return row

    base_task = make_task(parse_params(arch_params(args, 0, **variants(args)[0][1])), manifest)
    unchanged = {name: Unchanged() for name in base_task.exported}
    out: dict = {"untranslated": base_task.evaluate(unchanged, feature_net, data, settings),
                 "oracle": base_task.real_floor(feature_net, data, settings), "runs": {}}  # fmt: skip
    for label, overrides in variants(args):
        rows, baseline = [], []
        for seed in args.seeds:
            p = parse_params(arch_params(args, seed, **overrides))
            task = make_task(p, manifest)
            torch.manual_seed(seed)
            trainer = GANTrainer(p, data, task=task)
            start = time.perf_counter()
            fit(p, data, trainer=trainer, log=None)
            rows.append(scored(task, trainer.exported_networks(), seed, time.perf_counter() - start, label))
            if args.arch == "pix2pix":
                start = time.perf_counter()
                nets = l1_unet(task, data, args, seed)
                baseline.append(scored(task, nets, seed, time.perf_counter() - start, "L1-only U-Net"))
        out["runs"][label] = summarise(rows)
        if baseline:
            out["runs"]["L1-only U-Net (plain loop)"] = summarise(baseline)
    if args.arch == "stargan":  # one G for k domains against the k(k-1) CycleGAN generators it replaces
        k, specs = len(domains), base_task.network_specs()
        count = lambda key, **kw: sum(p.numel() for p in build_network(key, **kw).parameters())  # noqa: E731
        cyc = count("cyclegan.G", channels=manifest["channels"], width=args.width, n_blocks=args.blocks)
        out["parameters"] = {"stargan_G": count(specs["G"]["network"], **specs["G"]["kwargs"]), "cyclegan_G": cyc,
                             "cyclegan_generators_for_k_domains": k * (k - 1), "cyclegan_total": k * (k - 1) * cyc}  # fmt: skip
    out["settings"] = vars(args) | {"feature_val_accuracy": feat_metrics.get("val_accuracy"), "out": str(args.out)}
    out["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "load_avg_1m": os.getloadavg()[0], "torch_threads": args.threads}  # fmt: skip
    return out


def table(result: dict) -> str:
    lines = [f"{'':<16}" + "".join(f"{k:>18}" for k in (*KEYS, "wall_s"))]
    for label, scores in (("untranslated", result["untranslated"]), ("oracle T(A)", result["oracle"])):
        lines.append(f"{label:<16}" + "".join(f"{scores.get(k, float('nan')):>18.3f}" for k in KEYS))
    for label, run_ in result["runs"].items():
        lines.append(f"{label + ' (median)':<16}" + "".join(f"{run_['median'].get(k, float('nan')):>18.3f}" for k in (*KEYS, "wall_s")))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(DOMAINS), default="cyclegan")
    parser.add_argument("--domains", nargs="+", default=None, help="the digits_domains transforms (default: the arch's, DOMAINS)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--d-layers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-ablation", action="store_true", help="skip the lambda_cyc = 0 runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--lambda-id", type=float, default=0.0, help="identity L1 as a fraction of lambda_cyc (0: off, as in docs/examples)")
    parser.add_argument("--adversarial", choices=["wgan-gp", "lsgan"], default="wgan-gp",
                        help="stargan: the reference's WGAN-GP (n_critic 5, lr 1e-4) or CycleGAN's LSGAN (n_critic 1, lr 2e-4)")
    parser.add_argument("--targets", choices=["shuffle", "other"], default="shuffle",
                        help="stargan: target domains, the reference's shuffled labels (the task's default) or never the source's")
    parser.add_argument("--lambda-idt", type=float, default=0.0, help="stargan: identity L1 weight (0: off, as the reference)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
