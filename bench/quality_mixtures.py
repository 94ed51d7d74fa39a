"""Benchmark: mode collapse on 2-D Gaussian mixtures, the protocol of PacGAN.

    python bench/quality_mixtures.py                       # ring + grid, GAN and PacGAN4, 3 seeds
    python bench/quality_mixtures.py --steps 1000 --seeds 0   # quicker

Lin, Khetan, Fanti, Oh 2018, "PacGAN: The power of two samples in generative
adversarial networks" (NeurIPS), sec. 4.1 and Table 1, following VEEGAN
(Srivastava et al. 2017):

- 2D-ring: 8 Gaussians with means (cos 2 pi i/8, sin 2 pi i/8) and sigma = 0.01;
- 2D-grid: 25 Gaussians with means (-4 + 2i, -4 + 2j), i, j in 0..4, and sigma = 0.05.

After training, 2,500 samples are drawn; a sample is high quality when it lies within
3 sigma of its nearest mode; a mode is covered when at least one high-quality sample
is assigned to it; the reverse KL is KL(p_gen || uniform) between the histogram of
high-quality samples over modes and the true (uniform) mode distribution (the
authors' code assigns samples to modes the same way).

Models are this project's fully connected G and D (``gan.models`` mlp, tanh output,
so data are divided by ``scale`` to lie inside (-1, 1) and generated points are
multiplied back), the non-saturating loss (``gan.losses``), Adam, trained by the
project's own trainer through the PacGAN task of ``bench/pacgan.py``. PacGAN
"packs" m samples into one D input: D sees ``[2 m]`` vectors of m real or m generated points.
The paper trained 400 epochs of 100,000 points (400k steps) with a 4x400 BatchNorm G
and a 3x200 maxout D; our budget is far smaller (``--steps``), see docs/benchmarks.md.
Writes bench/results/quality_mixtures.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from pacgan import train_packed

RESULTS = Path(__file__).parent / "results" / "quality_mixtures.json"
NUM_EVAL_SAMPLES = 2500
HIGH_QUALITY_SIGMAS = 3.0

# PacGAN Table 1 (mean over 10 trials): modes covered, % high-quality samples, reverse KL.
PUBLISHED = {
    ("ring", 1): {"modes": 6.3, "high_quality_pct": 98.2, "reverse_kl": None},
    ("ring", 4): {"modes": 7.8, "high_quality_pct": 95.9, "reverse_kl": None},
    ("grid", 1): {"modes": 17.3, "high_quality_pct": 94.8, "reverse_kl": None},
    ("grid", 4): {"modes": 24.8, "high_quality_pct": 93.6, "reverse_kl": 0.04},
}


def ring_means(n: int = 8, radius: float = 1.0) -> np.ndarray:
    """``[n, 2]`` means evenly spaced on a circle."""
    angles = 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid_means(side: int = 5, spacing: float = 2.0) -> np.ndarray:
    """``[side^2, 2]`` means on a square grid centred at the origin."""
    ticks = spacing * (np.arange(side) - (side - 1) / 2)
    return np.array([(x, y) for x in ticks for y in ticks])


MIXTURES = {"ring": (ring_means(), 0.01), "grid": (grid_means(), 0.05)}


def sample_mixture(means: np.ndarray, sigma: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points ``[n, 2]`` from the equal-weight mixture of N(mean, sigma^2 I)."""
    which = rng.integers(0, len(means), n)
    return means[which] + sigma * rng.normal(size=(n, 2))


def mode_statistics(points: np.ndarray, means: np.ndarray, sigma: float, threshold: float = HIGH_QUALITY_SIGMAS) -> dict[str, float]:
    """Modes covered, % high-quality samples and reverse KL of ``points [n, 2]`` (see module docstring)."""
    dist = np.linalg.norm(points[:, None, :] - means[None, :, :], axis=2)  # [n, modes]
    nearest = dist.argmin(axis=1)
    good = dist[np.arange(len(points)), nearest] < threshold * sigma
    counts = np.bincount(nearest[good], minlength=len(means))
    if counts.sum() == 0:
        reverse_kl = float("nan")
    else:
        p = counts / counts.sum()
        nz = p > 0
        reverse_kl = float(np.sum(p[nz] * np.log(p[nz] * len(means))))  # KL(p || uniform)
    return {"modes": int((counts > 0).sum()), "high_quality_pct": 100.0 * float(good.mean()), "reverse_kl": reverse_kl}


def train(means: np.ndarray, sigma: float, pack: int, steps: int, seed: int, batch: int = 100, lr: float = 1e-3,
          width: int = 64, scale: float = 5.0) -> torch.nn.Module:
    """Train G (and a D that sees ``pack`` points at once) on the mixture with the project's trainer; return G."""

    def sample_real(n: int, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(sample_mixture(means, sigma, n, rng) / scale).float()  # [n, 2]

    G_spec = {"network": "mlp.G", "kwargs": {"z_dim": 2, "out_shape": [2], "width": width, "depth": 3}}
    D_spec = {"network": "mlp.D", "kwargs": {"in_shape": [2 * pack], "width": width, "depth": 3}}
    # the learning rate falls linearly to 0: the "high-quality" test asks for points within
    # 3 sigma = 0.03 of a ring mode, which the last, small steps sharpen
    return train_packed(G_spec, D_spec, sample_real, pack=pack, steps=steps, seed=seed, batch=batch, lr=lr, decay=True)


@torch.no_grad()
def generate(G: torch.nn.Module, n: int, seed: int, scale: float = 5.0) -> np.ndarray:
    """``n`` generated points ``[n, 2]`` in data coordinates."""
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(10_000 + seed))
    return G(z, None).double().numpy() * scale


def run(mixtures: list[str], packs: list[int], seeds: list[int], steps: int) -> list[dict]:
    """One row per (mixture, pack): mean and std over seeds of each statistic, plus wall time."""
    rows = []
    for name in mixtures:
        means, sigma = MIXTURES[name]
        scale = 1.25 * float(np.abs(means).max())  # data inside (-0.8, 0.8): well within tanh's range
        for pack in packs:
            per_seed, start = [], time.perf_counter()
            for seed in seeds:
                G = train(means, sigma, pack, steps, seed, scale=scale)
                per_seed.append(mode_statistics(generate(G, NUM_EVAL_SAMPLES, seed, scale), means, sigma))
            row = {"mixture": name, "pack": pack, "steps": steps, "seeds": seeds, "per_seed": per_seed,
                   "seconds": round(time.perf_counter() - start, 1), "published": PUBLISHED.get((name, pack))}
            for key in ("modes", "high_quality_pct", "reverse_kl"):
                values = np.array([s[key] for s in per_seed], dtype=float)
                row[key], row[f"{key}_std"] = float(np.nanmean(values)), float(np.nanstd(values))
            rows.append(row)
            print(_format_row(row, len(means)), flush=True)
    return rows


def _format_row(row: dict, num_modes: int) -> str:
    pub = row["published"] or {}
    label = "GAN" if row["pack"] == 1 else f"PacGAN{row['pack']}"
    kl_pub = "-" if pub.get("reverse_kl") is None else f"{pub['reverse_kl']:.2f}"
    return (f"{row['mixture']:<5} {label:<8} modes {row['modes']:5.1f}/{num_modes} +-{row['modes_std']:4.1f} "
            f"(paper {pub.get('modes', '-')})  high-quality {row['high_quality_pct']:5.1f}% +-{row['high_quality_pct_std']:4.1f} "
            f"(paper {pub.get('high_quality_pct', '-')})  reverse KL {row['reverse_kl']:.3f} (paper {kl_pub})  {row['seconds']:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixtures", nargs="+", default=list(MIXTURES), choices=list(MIXTURES))
    parser.add_argument("--packs", nargs="+", type=int, default=[1, 4], help="1 = GAN, m > 1 = PacGANm")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=8000, help="D+G updates per run (the paper: 400k)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = run(args.mixtures, args.packs, args.seeds, args.steps)
    result = {
        "benchmark": "quality_mixtures",
        "protocol": "PacGAN Table 1: 2,500 samples, high quality within 3 sigma, reverse KL over high-quality mode histogram",
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v) + "\n")
    print(f"wrote {out} ({result['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
