"""One evaluation for every stage: train, tune, evaluate and register all call this.

    metrics = evaluate_generator(G, feature_net, val_x, val_y, num_samples=500, seed=0, batch_size=500)
    metrics["fid"], metrics["kid"], metrics["precision"], metrics["mode_coverage"], ...
    floor = real_floor(feature_net, train_x, train_y, val_x, val_y)    # the same names, real vs real

Both embed the two image sets once with the feature network (features and class
logits in a single pass) and hand the embeddings to :func:`compare`, so every stage
speaks of one FID.

Stable names (all floats; lower is better for ``fid``, ``kid``, ``class_kl``):

    fid, kid, precision, recall, density, coverage      always
    inception_score, mode_coverage, class_kl            when the feature network classifies (labelled data)
    conditional_accuracy, conditional_accuracy/<k>      when the "fake" side has requested labels
                                                        (a conditional G; the training labels in the floor)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gan.errors import GanError
from gan.features import FeatureNet, ImageArray
from gan.metrics import (
    class_histogram,
    class_kl,
    conditional_accuracy,
    density_coverage,
    fid,
    inception_score,
    kid,
    mode_coverage,
    per_class_accuracy,
    precision_recall,
)
from gan.sampling import sample

# KID's paper averages 100 subsets; with validation splits of a few hundred images every
# subset holds nearly all real rows, so more subsets add time (KID dominates the cost of
# an evaluation) but little precision
KID_SUBSETS = 50


@dataclass(frozen=True)
class Embedding:
    """One image set as the metrics see it."""

    features: torch.Tensor  # [N, D]
    logits: torch.Tensor | None  # [N, K], None without a classifier
    labels: torch.Tensor | None  # [N] true (real) or requested (conditional G) labels, else None


def embed_images(feature_net: FeatureNet, x: ImageArray, y: ImageArray | None = None, batch_size: int = 500) -> Embedding:
    """Features and logits of real images ``x [N, C, H, W]`` (labels ``y [N]`` kept alongside)."""
    feats, logits = feature_net.embed(x, batch_size)
    labels = None if y is None else torch.as_tensor(np.array(y, dtype=np.int64))
    return Embedding(feats, logits, labels)


@torch.no_grad()
def embed_generator(
    G: nn.Module, feature_net: FeatureNet, num_samples: int, seed: int, batch_size: int, labels: Sequence[int] | None = None
) -> Embedding:
    """Generate ``num_samples`` images batch by batch and embed them; images are never all held at once.

    G is switched to eval mode for sampling (BatchNorm uses its running statistics)
    and put back in the mode it was in.
    """
    was_training = G.training
    device = next(G.parameters()).device
    feats, logits, ys = [], [], []
    try:
        G.eval()
        for x, y in sample(G, num_samples, labels=labels, seed=seed, batch_size=batch_size, device=device):
            f, lg = feature_net.embed(x, batch_size)
            feats.append(f)
            if lg is not None:
                logits.append(lg)
            if y is not None:
                ys.append(y)
    finally:
        G.train(was_training)
    return Embedding(torch.cat(feats), torch.cat(logits) if logits else None, torch.cat(ys) if ys else None)


def class_labels_like(real_y: ImageArray | None, num_classes: int, n: int, seed: int) -> list[int]:
    """``n`` labels for a conditional G, drawn (seeded) with the real split's class frequencies.

    Matching the real frequencies keeps FID comparing like with like; without real
    labels every class is equally likely.
    """
    if real_y is not None and len(real_y):
        weights = torch.as_tensor(np.bincount(np.asarray(real_y, dtype=np.int64), minlength=num_classes)[:num_classes], dtype=torch.float64)
    else:
        weights = torch.ones(num_classes, dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(seed) + 2)
    return torch.multinomial(weights, n, replacement=True, generator=gen).tolist()


def compare(
    real: Embedding, fake: Embedding, num_classes: int = 0, nearest_k: int = 5, kid_subset_size: int = 500, seed: int = 0
) -> dict[str, float]:
    """Every metric of ``fake`` against ``real`` under the stable names (see the module docstring)."""
    if len(real.features) <= nearest_k or len(fake.features) <= nearest_k:
        raise GanError(
            f"evaluation needs more than evaluate.nearest_k = {nearest_k} samples per set, got "
            f"{len(real.features)} real and {len(fake.features)} generated; ask for more samples or lower nearest_k."
        )
    precision, recall = precision_recall(real.features, fake.features, nearest_k)
    density, coverage = density_coverage(real.features, fake.features, nearest_k)
    out = {
        "fid": fid(real.features, fake.features),
        "kid": kid(real.features, fake.features, subset_size=kid_subset_size, subsets=KID_SUBSETS, seed=seed),
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
    }
    if fake.logits is not None and num_classes > 0:
        predicted = fake.logits.argmax(dim=1)  # [N] the classifier's class of each sample
        real_hist = _real_class_histogram(real, num_classes)
        out["inception_score"] = inception_score(fake.logits, seed=seed)
        out["mode_coverage"] = mode_coverage(predicted, real_hist)
        out["class_kl"] = class_kl(predicted, real_hist)
        if fake.labels is not None:
            out["conditional_accuracy"] = conditional_accuracy(predicted, fake.labels, num_classes)
            for k, acc in enumerate(per_class_accuracy(predicted, fake.labels, num_classes)):
                if not np.isnan(acc):
                    out[f"conditional_accuracy/{k}"] = float(acc)
    return out


def _real_class_histogram(real: Embedding, num_classes: int) -> np.ndarray:
    """The real class frequencies: from the true labels, else from the classifier's predictions."""
    if real.labels is not None:
        return class_histogram(real.labels, num_classes)
    if real.logits is None:
        raise ValueError("real embedding has neither labels nor logits")
    return class_histogram(real.logits.argmax(dim=1), num_classes)


def evaluate_generator(
    G: nn.Module,
    feature_net: FeatureNet,
    real_x: ImageArray,
    real_y: ImageArray | None,
    num_samples: int,
    seed: int = 0,
    batch_size: int = 500,
    nearest_k: int = 5,
    kid_subset_size: int = 500,
) -> dict[str, float]:
    """Metrics of ``num_samples`` images from G against the real images ``real_x`` (the validation split).

    A conditional G (``G.num_classes > 0``) is asked for classes drawn with the real
    class frequencies, and its ``conditional_accuracy`` is reported. Deterministic for
    ``seed``; G and the feature network may live on any device.
    """
    num_classes = feature_net.num_classes
    g_classes = int(getattr(G, "num_classes", 0))
    if g_classes and num_classes and g_classes != num_classes:
        raise GanError(
            f"the generator has {g_classes} classes but the feature network {num_classes}; "
            "re-run featurize and train on the same prepared data."
        )
    labels = class_labels_like(real_y, g_classes, num_samples, seed) if g_classes else None
    real = embed_images(feature_net, real_x, real_y, batch_size)
    fake = embed_generator(G, feature_net, num_samples, seed, batch_size, labels)
    return compare(real, fake, num_classes, nearest_k, kid_subset_size, seed)


def real_floor(
    feature_net: FeatureNet,
    train_x: ImageArray,
    train_y: ImageArray | None,
    val_x: ImageArray,
    val_y: ImageArray | None,
    num_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    nearest_k: int = 5,
    kid_subset_size: int = 500,
) -> dict[str, float]:
    """The same metrics with the training split in the generator's place: the real-vs-real floor.

    This is what a generator that reproduced the training set exactly would score
    against the validation split, so the real side (validation images, their k-NN
    balls and class frequencies) is the very one the generator is measured against.
    ``num_samples`` (default: all) subsamples the training split to the generator's
    sample count, because FID's bias depends on it. The classifier-based entries are
    optimistic (the classifier was trained on these images): read them as a ceiling.
    """
    rows = np.arange(len(train_x))
    if num_samples is not None and num_samples < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), size=num_samples, replace=False))
    fake_x = train_x if len(rows) == len(train_x) else train_x[rows]
    fake_y = None if train_y is None else (train_y if len(rows) == len(train_y) else train_y[rows])
    real = embed_images(feature_net, val_x, val_y, batch_size)
    fake = embed_images(feature_net, fake_x, fake_y, batch_size)
    return compare(real, fake, feature_net.num_classes, nearest_k, kid_subset_size, seed)
