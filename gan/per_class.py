"""Per-class recall and coverage, beside the real-vs-real floor of each class: the blind spot of global metrics.

    rows = per_class_quality(real, fake, num_classes, nearest_k=5)          # Embeddings from gan.evaluation
    floor = per_class_quality(real, real_train, num_classes, nearest_k=5)
    alerts = coverage_alerts(rows, floor, class_names)                      # ["class 'cat': coverage 0.12, floor 0.91 ..."]

A conditional generator that collapses one class onto its background still scores a
perfect ``mode_coverage`` (the classifier calls the blobs by the requested class) and a
fair global recall; that class's own recall and coverage, measured within the class (its
real images against the samples asked for it, Kynkäänniemi et al. 2019; Naeem et al.
2020), fall far below what real images of the class score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gan.charts import notice, png_bytes, pyplot
from gan.evaluation import class_labels_like, embed_generator, embed_images
from gan.metrics import density_coverage, precision_recall

# A class's coverage or recall below this fraction of its own real-vs-real floor raises an alert.
ALERT_FRACTION = 0.5
# A class whose samples the feature classifier calls by their class less often than this
# fraction of how often it calls real images of the class by it raises an alert: the
# generator draws another class, or no digit at all, for much of what it is asked (at 0.48
# against a floor of 0.83, about half of the class's samples are not of the class).
ACCURACY_FRACTION = 0.75


def per_class_quality(real: Any, fake: Any, num_classes: int, nearest_k: int = 5) -> list[dict[str, float | None]]:
    """``[{"recall", "coverage", "real", "fake"}]`` per class from two labelled embeddings (``.features``, ``.labels``).

    A class with ``nearest_k`` or fewer images on either side has no k-NN estimate: its
    values are None.
    """
    rows: list[dict[str, float | None]] = []
    for k in range(num_classes):
        r, f = _rows(real, k), _rows(fake, k)
        row: dict[str, float | None] = {"real": float(len(r)), "fake": float(len(f)), "recall": None, "coverage": None}
        if len(r) > nearest_k and len(f) > nearest_k:
            _, recall = precision_recall(r, f, nearest_k)
            _, coverage = density_coverage(r, f, nearest_k)
            row.update(recall=float(recall), coverage=float(coverage))
        rows.append(row)
    return rows


def class_report(
    G: Any, feature_net: Any, train_x: Any, train_y: Any, val_x: Any, val_y: Any, num_samples: int,
    seed: int = 0, batch_size: int = 500, nearest_k: int = 5,
) -> tuple[list[dict[str, float | None]], list[dict[str, float | None]]]:  # fmt: skip
    """``(generator, floor)`` per-class rows on the validation split.

    The generator is asked for the same samples as :func:`gan.evaluation.evaluate_generator`
    draws (same seed, labels with the real class frequencies); the floor puts a same-size
    sample of the training split in its place, as :func:`gan.evaluation.real_floor` does.
    """
    num_classes = int(getattr(G, "num_classes", 0))
    real = embed_images(feature_net, val_x, val_y, batch_size)
    labels = class_labels_like(val_y, num_classes, num_samples, seed)
    fake = embed_generator(G, feature_net, num_samples, seed, batch_size, labels)
    rows = np.arange(len(train_x))
    if num_samples < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), size=num_samples, replace=False))
    train = embed_images(feature_net, train_x[rows], train_y[rows], batch_size)
    return per_class_quality(real, fake, num_classes, nearest_k), per_class_quality(real, train, num_classes, nearest_k)


def _rows(embedding: Any, k: int) -> torch.Tensor:
    """The features ``[n_k, D]`` of class ``k`` (none when the embedding has no labels)."""
    if embedding.labels is None:
        return embedding.features[:0]
    return embedding.features[embedding.labels == k]


def coverage_alerts(rows: list[dict[str, Any]], floor: list[dict[str, Any]], class_names: list[str], fraction: float = ALERT_FRACTION,
                    accuracy: list[dict[str, Any]] | None = None, accuracy_fraction: float = ACCURACY_FRACTION) -> list[str]:  # fmt: skip
    """One sentence per class that falls far below its real-vs-real floor, else nothing for it.

    A class is flagged when its coverage or its recall is below ``fraction`` of its floor
    (the generator misses much of what the class looks like), or, given ``accuracy`` (each
    class's ``conditional_accuracy`` and ``floor/conditional_accuracy``, eval/per_class.json's
    rows), when its conditional accuracy is below ``accuracy_fraction`` of its floor (its
    samples are often not of the class).
    """
    by_class = {int(c["class"]): c for c in accuracy or []}
    alerts = []
    for k, (row, base) in enumerate(zip(rows, floor, strict=True)):
        name = class_names[k] if k < len(class_names) else str(k)
        low = [f"{metric} {row[metric]:.2f} is below {fraction:.0%} of its real-vs-real floor {base[metric]:.2f}"
               for metric in ("coverage", "recall") if _below(row.get(metric), base.get(metric), fraction)]  # fmt: skip
        entry = by_class.get(k, {})
        got, want = entry.get("conditional_accuracy"), entry.get("floor/conditional_accuracy")
        if _below(got, want, accuracy_fraction):
            low.append(f"conditional accuracy {got:.2f} is below {accuracy_fraction:.0%} of its real-vs-real floor {want:.2f}")
        if low:
            alerts.append(f"class {name!r}: {'; '.join(low)} (recall {row['recall']:.2f}): the generator misses much of what this class looks like")
    return alerts


def _below(got: float | None, want: float | None, fraction: float) -> bool:
    """Whether ``got`` is below ``fraction`` of a usable floor ``want`` (absent or non-positive floors flag nothing)."""
    if got is None or want is None or not math.isfinite(want) or want <= 0 or not math.isfinite(got):
        return False
    return got < fraction * want


def per_class_chart(rows: list[dict[str, Any]], floor: list[dict[str, Any]], class_names: list[str],
                    empty: str = "unconditional generator: no per-class figures") -> bytes:  # fmt: skip
    """PNG: recall and coverage per class as bars, the floor of each as a tick; ``empty`` says why there are none."""
    n = len(rows)
    if not n:  # the figure says so (DVC expects the file either way)
        return notice(empty)
    plt = pyplot()
    names = [class_names[k] if k < len(class_names) else str(k) for k in range(n)]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * n + 2), 4.0), dpi=100)
    width = 0.38
    for i, (metric, colour) in enumerate((("recall", "tab:blue"), ("coverage", "tab:orange"))):
        xs = [k + (i - 0.5) * width for k in range(n)]
        values = [row[metric] if row[metric] is not None else math.nan for row in rows]
        ax.bar(xs, values, width, label=metric, color=colour)
        ax.scatter(xs, [b[metric] if b[metric] is not None else math.nan for b in floor], marker="_", s=300, c="k",
                   label="real-vs-real floor" if i == 0 else None, zorder=3)  # fmt: skip
    ax.set_xticks(range(n), names, rotation=45 if n > 12 else 0)
    ax.set(xlabel="class", ylabel="recall / coverage (1 = all of the class's real variety)", ylim=(0, 1.05),
           title="Per-class recall and coverage")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    return png_bytes(fig)
