"""Probe: which sign of the source's strokes StarGAN's one generator applies, per domain pair.

    nice -n 5 python bench/stargan_content_sign.py                                  # reference G, seeds 0 1 2
    nice -n 5 python bench/stargan_content_sign.py --variant gated --seeds 0 1 2    # x times each label channel as input too
    nice -n 5 python bench/stargan_content_sign.py --variant reference --g-width 32 --seeds 0

A plain PyTorch loop of the translate task's LSGAN StarGAN step (``adversarial: lsgan``:
D on real images with its domain-classification term, G with the least-squares
adversarial term, the classification term on its fakes and lambda_rec 10
reconstruction; n_critic 1, Adam 2e-4 (0.5, 0.999), lr constant then linearly to 0;
the reference's shuffled targets) on the embedded digits domains plain, inverted,
dilated at 16 px; widths 16, 3 residual blocks, batch 16. A plain loop, not the
trainer, so that the generator's input can be varied:

- ``reference``: the task's :class:`StarGANGenerator` (labels tiled and concatenated);
- ``gated``: the same network whose input also holds x times each tiled label channel,
  which gives every target domain its own (signed) first filter on the image.

For every ordered domain pair it reports content preservation (the task's RBF-SVM
digit judge) and the **content sign**: the mean per-image correlation between the
translation and its source, both centred by the pair's mean image. About +0.9 means G
kept the strokes' sign, about -0.9 that it flipped it; the true mapping flips it for
the four pairs with ``inverted`` and keeps it for plain <-> dilated. Writes ``--out``
(default bench/results/stargan_content_sign.json).
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "stargan_content_sign.json"
DOMAINS = ["plain", "inverted", "dilated"]


class GatedStarGANGenerator(torch.nn.Module):
    """StarGAN's G whose input is ``[x, tiled c, x * tiled c]``: a per-target-domain filter on x."""

    def __init__(self, k: int, width: int, n_blocks: int) -> None:
        super().__init__()
        from gan.models.translate import StarGANGenerator

        self.g = StarGANGenerator(1, k, width, n_blocks)
        self.g.net[0] = torch.nn.Conv2d(1 + 2 * k, width, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        tiled = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.g.net(torch.cat([x, tiled, x * tiled], 1))


def content_sign(fake: torch.Tensor, source: torch.Tensor) -> float:
    """Mean per-image correlation of ``fake`` and ``source`` ([N, 1, S, S]), each centred by its mean image."""
    f = (fake - fake.mean(0)).flatten(1)
    s = (source - source.mean(0)).flatten(1)
    return float(((f * s).sum(1) / (f.norm(dim=1) * s.norm(dim=1) + 1e-8)).mean())


def score(G: torch.nn.Module, vx: torch.Tensor, vy: np.ndarray, vc: np.ndarray, judge) -> dict[str, dict[str, float]]:
    """Content preservation and content sign for every ordered pair of domains on the validation split."""
    from gan.tasks.translate import one_hot

    k, out = len(DOMAINS), {}
    G.eval()
    with torch.no_grad():
        for s in range(k):
            rows = np.flatnonzero(vy == s)
            for t in range(k):
                if s != t:
                    fake = G(vx[rows], one_hot(torch.full((len(rows),), t), k)).clamp(-1, 1)
                    content = float((judge.predict(fake.flatten(1).numpy()) == vc[rows]).mean())
                    out[f"{DOMAINS[s]}>{DOMAINS[t]}"] = {"content": round(content, 3), "sign": round(content_sign(fake, vx[rows]), 2)}
    G.train()
    return out


def run(args: argparse.Namespace, data: Path, seed: int) -> dict:
    """One seed of the plain loop; the pair scores every ``--score-every`` steps and at the end."""
    from gan.config import parse_params
    from gan.data import load_extra, load_split, read_manifest
    from gan.losses import (
        d_loss_least_squares,
        domain_classification_loss,
        g_loss_least_squares_cyclegan,
        l1_reconstruction_loss,
    )
    from gan.models.translate import StarGANDiscriminator, StarGANGenerator
    from gan.tasks import make_task
    from gan.tasks.translate import content_judge, one_hot, target_domains

    k = len(DOMAINS)
    params = parse_params({"prepare": {"source": "digits_domains", "domains": DOMAINS, "image_size": 16},
                           "model": {"task": "translate", "g_width": args.g_width, "d_width": args.d_width,
                                     "translate": {"arch": "stargan", "n_blocks": 3, "adversarial": "lsgan"}},
                           "train": {"batch_size": 16, "steps": args.steps, "seed": seed, "n_critic": 1, "lr_G": 2e-4, "lr_D": 2e-4}})  # fmt: skip
    task = make_task(params, read_manifest(data))
    torch.manual_seed(seed)
    G = GatedStarGANGenerator(k, args.g_width, 3) if args.variant == "gated" else StarGANGenerator(1, k, args.g_width, 3)
    D = StarGANDiscriminator(1, 16, k, args.d_width, 3)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    batches = task.batches(data, 0, 1, 0)
    vx, vy = load_split(data, "val")
    vx, vc, judge = torch.from_numpy(np.array(vx)), load_extra(data, "val", "content"), content_judge(str(data))
    constant, history, start = args.steps // 2, {}, time.perf_counter()
    for step in range(args.steps):
        for opt in (opt_g, opt_d):  # constant, then linearly to 0 (as the task's schedule)
            for group in opt.param_groups:
                group["lr"] = 2e-4 * (1.0 - max(0, step - constant) / (args.steps - constant + 1))
        batch = next(batches)
        x, c_org = batch["image"], batch["domain"]
        c_trg = target_domains(c_org, k, "shuffle")
        with torch.no_grad():
            fake = G(x, one_hot(c_trg, k))
        src_real, cls_real = D(x)
        loss_d = d_loss_least_squares(src_real, D(fake)[0]) + domain_classification_loss(cls_real, c_org)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        fake = G(x, one_hot(c_trg, k))
        src, cls = D(fake)
        loss_g = (g_loss_least_squares_cyclegan(src) + domain_classification_loss(cls, c_trg)
                  + 10.0 * l1_reconstruction_loss(G(fake, one_hot(c_org, k)), x))  # fmt: skip
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if (step + 1) % args.score_every == 0 or step + 1 == args.steps:
            history[step + 1] = score(G, vx, vy, vc, judge)
            print(f"seed {seed} step {step + 1}: " + ", ".join(f"{p} {v['content']:.3f} ({v['sign']:+.2f})" for p, v in history[step + 1].items()), flush=True)
    return {"seed": seed, "wall_s": round(time.perf_counter() - start, 1), "g_params": sum(p.numel() for p in G.parameters()),
            "final": history[args.steps], "history": history}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=["reference", "gated"], default="reference")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--score-every", type=int, default=250)
    ap.add_argument("--g-width", type=int, default=16)
    ap.add_argument("--d-width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from gan.config import PrepareConfig
    from gan.data import prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare_dataset(PrepareConfig(source="digits_domains", domains=DOMAINS, image_size=16), data)
        runs = [run(args, data, seed) for seed in args.seeds]
    pairs = list(runs[0]["final"])
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), {platform.platform()}",
        "args": {k: str(v) for k, v in vars(args).items()},
        "median_content": {p: statistics.median(r["final"][p]["content"] for r in runs) for p in pairs},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({"median_content": result["median_content"], "wall_s": [r["wall_s"] for r in runs]}))


if __name__ == "__main__":
    main()
