"""Benchmark: mode collapse on stacked digits (1,000 modes), the Stacked MNIST protocol.

    python bench/stacked_digits.py                         # DCGAN and PacDCGAN2, 2 seeds
    python bench/stacked_digits.py --steps 500 --seeds 0   # quicker

Stacked MNIST (Metz et al. 2017, "Unrolled GANs"; Srivastava et al. 2017, "VEEGAN";
Lin et al. 2018, "PacGAN", sec. 4.2 and Table 2): three digit images stacked as the
R, G, B channels make an image of one of 10^3 = 1,000 modes. A classifier labels each
channel of 26,000 generated images; the scores are the number of modes with at least
one sample and KL(p_gen || uniform) between the generated mode histogram and the
uniform distribution of the real data. Published (PacGAN Table 2, VEEGAN's setup):
DCGAN 99 modes / KL 3.40; PacDCGAN 1,000 modes / KL 0.06.

Here the digits are the ones bundled with scikit-learn (1,797 images, prepared by
``gan.data`` at ``--image-size``), the classifier is the pipeline's own domain
classifier (``gan.features``), G and D are ``gan.models`` dcgan with the non-saturating
loss (``gan.losses``), trained by the project's own trainer (the PacGAN task of
``bench/pacgan.py``), and PacDCGAN packs m images into one D input along the channels. The same statistics are reported for 26,000 real stacked images (the
real floor: classifier errors and finite sampling keep it above 0). The budget is
``--steps`` updates per run on a 2-core CPU, much less than the papers' (tens of
epochs of 128,000 images on a GPU); see docs/benchmarks.md.
Writes bench/results/stacked_digits.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pacgan import train_packed

from gan.config import FeaturizeConfig, PrepareConfig
from gan.data import load_split, prepare_dataset
from gan.features import DomainNet, train_feature_net
from gan.metrics import class_kl, modes_covered

RESULTS = Path(__file__).parent / "results" / "stacked_digits.json"
NUM_MODES = 1000
NUM_EVAL_SAMPLES = 26_000  # as VEEGAN and PacGAN
PUBLISHED = {1: {"modes": 99, "kl": 3.40, "source": "DCGAN, VEEGAN Table 2 / PacGAN Table 2"},
             2: {"modes": 1000, "kl": 0.06, "source": "PacDCGAN, PacGAN Table 2"}}


def stack(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` stacked images ``[n, 3, S, S]`` from single-channel digits ``x [N, 1, S, S]``, and their modes ``[n]``."""
    idx = rng.integers(0, len(x), size=(n, 3))  # three independent digits per image
    images = torch.from_numpy(np.array(x[idx.ravel()], dtype=np.float32)).view(n, 3, *x.shape[2:])
    modes = 100 * y[idx[:, 0]] + 10 * y[idx[:, 1]] + y[idx[:, 2]]
    return images, modes


@torch.no_grad()
def classify_modes(classifier: DomainNet, images: torch.Tensor, batch: int = 2000) -> np.ndarray:
    """Mode ``[n]`` of stacked images ``[n, 3, S, S]``: the classifier's digit for each channel."""
    modes = []
    for start in range(0, len(images), batch):
        xb = images[start : start + batch]
        digits = classifier(xb.reshape(-1, 1, *xb.shape[2:])).argmax(1).view(-1, 3)  # [b, 3]
        modes.append((digits * torch.tensor([100, 10, 1])).sum(1))
    return torch.cat(modes).numpy()


def scores(modes: np.ndarray) -> dict[str, float]:
    """Modes covered (at least one sample) and KL(p_gen || uniform over 1,000 modes)."""
    return {"modes": modes_covered(modes, NUM_MODES), "kl": class_kl(modes, np.full(NUM_MODES, 1.0 / NUM_MODES))}


def train(x: np.ndarray, y: np.ndarray, pack: int, steps: int, seed: int, batch: int = 64, z_dim: int = 64,
          width: int = 32, lr: float = 2e-4) -> torch.nn.Module:
    """DCGAN on stacked digits with the project's trainer; D sees ``pack`` images joined along the channels. Returns G."""
    size = int(x.shape[-1])

    def sample_real(n: int, rng: np.random.Generator) -> torch.Tensor:
        return stack(x, y, n, rng)[0]  # [n, 3, S, S]

    G_spec = {"network": "dcgan.G", "kwargs": {"z_dim": z_dim, "channels": 3, "image_size": size, "width": width}}
    D_spec = {"network": "dcgan.D", "kwargs": {"channels": 3 * pack, "image_size": size, "width": width}}
    return train_packed(G_spec, D_spec, sample_real, pack=pack, steps=steps, seed=seed, batch=batch, lr=lr)


@torch.no_grad()
def generate(G: torch.nn.Module, n: int, seed: int, batch: int = 2000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(10_000 + seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    return torch.cat([G(z[s : s + batch], None) for s in range(0, n, batch)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", nargs="+", type=int, default=[1, 2], help="1 = DCGAN, m > 1 = PacDCGANm")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=2000, help="D+G updates per run")
    parser.add_argument("--image-size", type=int, default=8, help="8 = the bundled digits' own resolution")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        prepare_dataset(PrepareConfig(image_size=args.image_size), Path(tmp) / "digits")
        train_x, train_y = (np.array(a) for a in load_split(Path(tmp) / "digits", "train"))
        val_x, val_y = (np.array(a) for a in load_split(Path(tmp) / "digits", "val"))
    # a narrow classifier: it labels 2 x 78,000 digit channels, which dominates the run time otherwise
    classifier, clf_metrics = train_feature_net(train_x, train_y, val_x, val_y, 10, FeaturizeConfig(width=16, feature_dim=64, epochs=15))
    print(f"classifier: val accuracy {clf_metrics['val_accuracy']:.4f} ({clf_metrics['seconds']:.0f}s)", flush=True)

    # real floor: stacked validation digits, scored the same way
    real_images, true_modes = stack(val_x, val_y, NUM_EVAL_SAMPLES, np.random.default_rng(123))
    predicted = classify_modes(classifier, real_images)
    floor = {**scores(predicted), "mode_accuracy": float((predicted == true_modes).mean())}
    print(f"real floor: modes {floor['modes']}/1000, KL {floor['kl']:.3f}, mode accuracy {floor['mode_accuracy']:.3f}", flush=True)

    rows = []
    for pack in args.packs:
        per_seed, t0 = [], time.perf_counter()
        for seed in args.seeds:
            G = train(train_x, train_y, pack, args.steps, seed)
            per_seed.append(scores(classify_modes(classifier, generate(G, NUM_EVAL_SAMPLES, seed))))
        row = {"pack": pack, "steps": args.steps, "seeds": args.seeds, "per_seed": per_seed,
               "seconds": round(time.perf_counter() - t0, 1), "published": PUBLISHED.get(pack)}
        for key in ("modes", "kl"):
            values = np.array([s[key] for s in per_seed], dtype=float)
            row[key], row[f"{key}_std"] = float(values.mean()), float(values.std())
        rows.append(row)
        label = "DCGAN" if pack == 1 else f"PacDCGAN{pack}"
        pub = row["published"] or {}
        print(f"{label:<10} modes {row['modes']:6.1f} +-{row['modes_std']:5.1f} (paper {pub.get('modes', '-')})  "
              f"KL {row['kl']:.3f} +-{row['kl_std']:.3f} (paper {pub.get('kl', '-')})  {row['seconds']:.0f}s", flush=True)

    result = {
        "benchmark": "stacked_digits",
        "protocol": "Stacked MNIST (VEEGAN/PacGAN): 26,000 samples, modes with >= 1 sample, KL(p_gen || uniform)",
        "image_size": args.image_size,
        "classifier": clf_metrics,
        "real_floor": floor,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['wall_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
