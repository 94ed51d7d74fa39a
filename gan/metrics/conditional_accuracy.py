"""Conditional accuracy: does a class-conditional G produce the class it was asked for?

The domain classifier labels samples generated for each requested class; the score
is its accuracy on them, averaged over classes so that every class weighs the same
whatever the label frequencies ("classification accuracy score"-style checks of
conditional GANs, e.g. Odena, Olah, Shlens 2017, "Conditional Image Synthesis with
Auxiliary Classifier GANs", sec. 4.1, who scored AC-GAN samples with a pretrained
classifier). A classifier's own validation accuracy is its ceiling (the real floor).
Plain arithmetic on labels, so no library is needed.
"""

from __future__ import annotations

import numpy as np
import torch


def per_class_accuracy(predicted: torch.Tensor | np.ndarray, requested: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy ``[num_classes]`` on the samples requested for each class (NaN for classes never requested)."""
    predicted = np.asarray(predicted, dtype=np.int64).ravel()
    requested = np.asarray(requested, dtype=np.int64).ravel()
    if predicted.shape != requested.shape:
        raise ValueError(f"predicted {predicted.shape} and requested {requested.shape} labels differ in length")
    asked = np.bincount(requested, minlength=num_classes).astype(np.float64)
    hits = np.bincount(requested[predicted == requested], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / asked


def conditional_accuracy(predicted: torch.Tensor | np.ndarray, requested: torch.Tensor | np.ndarray, num_classes: int) -> float:
    """Mean over requested classes of the per-class accuracy, in [0, 1]."""
    return float(np.nanmean(per_class_accuracy(predicted, requested, num_classes)))
