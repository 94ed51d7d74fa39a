"""The memorisation audit of a generator: does it copy its training images, and does membership leak?

    figures, pairs = audit_images(samples, sets, feature_net, D=D)          # samples [N, C, H, W] in [-1, 1]
    figures, pairs, samples = audit_generator(G, D, feature_net, train_x, train_y, val_x, val_y, num_samples=2000)
    save_grid(*closest_pairs_grid(samples, sets.train_x, pairs), "eval/closest.png")   # sample | nearest training image
    problem = memorisation_excess(figures, max_memorisation=0.55)            # one sentence, or None

Run by the evaluate stage on every ``generate`` model (``privacy`` in eval/metrics.json)
and read back by register, whose ``register.max_memorisation`` refuses promotion of a
generator whose worst figure exceeds it. Figures (all 0.5 when nothing is memorised or
leaks; higher is worse):

    dcr_share/pixel, dcr_share/feature    share of samples closer to a training image than to a held-out one
                                          (distance to closest record; gan.metrics.closest_record)
    mia_auroc/distance                    membership inference by the distance from a real image to the nearest
                                          sample (GAN-Leaks), pixel space
    mia_auroc/discriminator               membership inference by D's score (LOGAN, Hayes et al. 2019); only when D is given

and, for a person to read (lower is worse, ~1 without memorisation):

    dcr_ratio_p5/pixel, dcr_ratio_p5/feature    5th percentile of d(sample, train) / d(sample, held-out)

The training and held-out sets are subsampled (seeded) to the same count: a
nearest-neighbour distance shrinks as its reference set grows, so unequal sets would
bias the share towards the larger one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gan.features import FeatureNet
from gan.metrics import dcr_ratio_percentile, dcr_share, membership_auroc, nearest_distances

# the figures register.max_memorisation bounds (0.5 = no memorisation or leak, 1.0 = total)
GATED = ("dcr_share/pixel", "dcr_share/feature", "mia_auroc/distance", "mia_auroc/discriminator")
CLOSEST_PAIRS = 16  # pairs drawn in eval/closest.png


@dataclass(frozen=True)
class AuditSets:
    """Training (member) and held-out (non-member) real images of the same count, with labels when labelled."""

    train_x: np.ndarray  # [M, C, H, W] in [-1, 1]
    train_y: np.ndarray | None
    held_x: np.ndarray  # [M, C, H, W]
    held_y: np.ndarray | None


def audit_sets(train_x: np.ndarray, train_y: np.ndarray | None, val_x: np.ndarray, val_y: np.ndarray | None, seed: int = 0) -> AuditSets:
    """Subsample the larger of the two splits (seeded) so both hold ``min(len(train), len(val))`` images."""
    m = min(len(train_x), len(val_x))
    rng = np.random.default_rng(seed)

    def take(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if len(x) == m:
            return np.asarray(x), None if y is None else np.asarray(y)
        rows = np.sort(rng.choice(len(x), size=m, replace=False))
        return np.asarray(x[rows]), None if y is None else np.asarray(y[rows])

    tx, ty = take(train_x, train_y)
    hx, hy = take(val_x, val_y)
    return AuditSets(tx, ty, hx, hy)


@torch.no_grad()
def discriminator_scores(D: nn.Module, x: np.ndarray, y: np.ndarray | None, batch_size: int = 500) -> torch.Tensor:
    """D's logits ``[N]`` on real images ``x [N, C, H, W]`` (with their labels for a conditional D), in eval mode."""
    was_training = D.training
    device = next(D.parameters()).device
    out = []
    try:
        D.eval()
        for start in range(0, len(x), batch_size):
            xb = torch.tensor(np.asarray(x[start : start + batch_size]), dtype=torch.float32, device=device)
            yb = None if y is None else torch.tensor(np.asarray(y[start : start + batch_size]), dtype=torch.long, device=device)
            out.append(D(xb, yb).float().flatten().cpu())
    finally:
        D.train(was_training)
    return torch.cat(out)


def audit_images(
    samples: np.ndarray | torch.Tensor, sets: AuditSets, feature_net: FeatureNet | None, D: nn.Module | None = None, batch_size: int = 500
) -> tuple[dict[str, float], np.ndarray]:
    """The audit's figures for ``samples [N, C, H, W]`` and the closest pairs ``[(sample index, training index)]``.

    ``feature_net`` None skips the feature-space figures; ``D`` None skips the
    discriminator attack. Pairs are the :data:`CLOSEST_PAIRS` samples with the smallest
    pixel distance ratio to training, most suspicious first.
    """
    fake = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    train, held = (torch.tensor(np.asarray(x), dtype=torch.float32) for x in (sets.train_x, sets.held_x))  # copies: shards are read-only maps
    figures: dict[str, float] = {}
    d_train, i_train = nearest_distances(fake, train)  # [N]
    d_held, _ = nearest_distances(fake, held)
    figures["dcr_share/pixel"] = dcr_share(d_train, d_held)
    figures["dcr_ratio_p5/pixel"] = dcr_ratio_percentile(d_train, d_held, 5.0)
    if feature_net is not None:
        f_fake, f_train, f_held = (feature_net.features(x, batch_size) for x in (fake, train, held))
        fd_train, _ = nearest_distances(f_fake, f_train)
        fd_held, _ = nearest_distances(f_fake, f_held)
        figures["dcr_share/feature"] = dcr_share(fd_train, fd_held)
        figures["dcr_ratio_p5/feature"] = dcr_ratio_percentile(fd_train, fd_held, 5.0)
    # distance attack: a real image nearer to some sample is more likely a member
    member_d, _ = nearest_distances(train, fake)
    non_member_d, _ = nearest_distances(held, fake)
    figures["mia_auroc/distance"] = membership_auroc(-member_d, -non_member_d)
    if D is not None:
        # LOGAN's white-box attack: D scores its own training images higher when it overfits them
        figures["mia_auroc/discriminator"] = membership_auroc(
            discriminator_scores(D, sets.train_x, sets.train_y, batch_size), discriminator_scores(D, sets.held_x, sets.held_y, batch_size)
        )
    ratio = d_train / d_held.clamp_min(1e-12)
    order = torch.argsort(ratio)[:CLOSEST_PAIRS]
    pairs = np.stack([order.numpy(), i_train[order].numpy()], axis=1)  # [P, 2]
    figures["memorisation"] = memorisation(figures)
    return figures, pairs


def memorisation(figures: dict[str, float]) -> float:
    """The worst gated figure (the one ``register.max_memorisation`` bounds)."""
    return max(figures[k] for k in GATED if k in figures)


def memorisation_excess(figures: dict[str, float], max_memorisation: float | None) -> str | None:
    """One sentence naming the worst gated figure above ``max_memorisation`` and by how much, or None (passes or no bound)."""
    if max_memorisation is None:
        return None
    over = {k: figures[k] for k in GATED if k in figures and figures[k] > max_memorisation}
    if not over:
        return None
    name, value = max(over.items(), key=lambda kv: kv[1])
    return f"privacy audit: {name} = {value:.3f} exceeds register.max_memorisation = {max_memorisation:g} by {value - max_memorisation:.3f}"


def generate_samples(G: nn.Module, num_samples: int, seed: int, labels: list[int] | None, batch_size: int = 500) -> np.ndarray:
    """``num_samples`` images ``[N, C, H, W]`` from G (eval mode, seeded), through :func:`gan.sampling.sample`."""
    from gan.sampling import sample

    was_training = G.training
    try:
        G.eval()
        with torch.no_grad():
            xs = [x for x, _ in sample(G, num_samples, labels=labels, seed=seed, batch_size=batch_size)]
    finally:
        G.train(was_training)
    return torch.cat(xs).numpy()


def audit_generator(
    G: nn.Module,
    D: nn.Module | None,
    feature_net: FeatureNet | None,
    train_x: np.ndarray,
    train_y: np.ndarray | None,
    val_x: np.ndarray,
    val_y: np.ndarray | None,
    num_samples: int,
    seed: int = 0,
    batch_size: int = 500,
) -> tuple[dict[str, float], np.ndarray, np.ndarray, AuditSets]:
    """Sample G (classes with the training frequencies for a conditional G) and audit the samples.

    Returns ``(figures, pairs, samples, sets)``; see :func:`audit_images`.
    """
    from gan.evaluation import class_labels_like

    classes = int(getattr(G, "num_classes", 0))
    labels = class_labels_like(train_y, classes, num_samples, seed) if classes else None
    samples = generate_samples(G, num_samples, seed, labels, batch_size)
    sets = audit_sets(train_x, train_y, val_x, val_y, seed)
    figures, pairs = audit_images(samples, sets, feature_net, D, batch_size)
    return figures, pairs, samples, sets


def closest_pairs_grid(samples: np.ndarray, train_x: np.ndarray, pairs: np.ndarray) -> tuple[torch.Tensor, int]:
    """``(images [2P, C, H, W], nrow=2)``: each row a sample and its nearest training image, for :func:`gan.grid.save_grid`."""
    rows = [torch.as_tensor(np.stack([samples[s], train_x[t]])) for s, t in pairs]
    return torch.cat(rows).float(), 2
