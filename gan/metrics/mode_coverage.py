"""Mode coverage and the KL divergence between class histograms (labelled data).

The domain classifier names the class (mode) of each generated sample:

- ``mode_coverage``: the share of the real data's classes that the generator
  produces. Counting every class with at least one sample is the Stacked MNIST
  protocol (Metz et al. 2017, "Unrolled GANs"; Srivastava et al. 2017, "VEEGAN";
  Lin et al. 2018, "PacGAN"), used by the benchmarks with ``min_share=0``. For the
  pipeline's metric a class counts only when the generator's share of it is at least
  ``min_share`` (default a tenth) of its share in the real data, because with ten
  classes a classifier that is 97% accurate scatters a few mistaken labels over
  every class and would make any generator look complete.
- ``class_kl``: KL(p_gen || p_real) between the class histograms of generated and
  real samples, the "reverse KL" of VEEGAN and PacGAN: 0 when the generator
  reproduces the real class frequencies, log(K / m) when it produces m of K uniform
  classes evenly.
"""

from __future__ import annotations

import numpy as np
import torch

# a class absent from the real data would make KL(p_gen || p_real) infinite;
# this floor keeps the value finite (and JSON-writable) yet very large
_EPS = 1e-8


def class_histogram(labels: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Class frequencies ``[num_classes]`` (summing to 1) of integer labels ``[N]``."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if len(labels) == 0:
        raise ValueError("class_histogram needs at least one label")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return np.bincount(labels, minlength=num_classes) / len(labels)


def mode_coverage(fake_labels: torch.Tensor | np.ndarray, real_hist: np.ndarray, min_share: float = 0.1) -> float:
    """Share of the classes present in ``real_hist`` that ``fake_labels`` produce (see module docstring)."""
    real_hist = np.asarray(real_hist, dtype=np.float64)
    counts = np.bincount(np.asarray(fake_labels, dtype=np.int64).ravel(), minlength=len(real_hist))
    present = real_hist > 0
    # at least one sample, and at least min_share of the count the real frequency implies
    needed = np.maximum(1.0, min_share * real_hist * counts.sum())
    return float((counts[present] >= needed[present]).mean())


def modes_covered(fake_labels: torch.Tensor | np.ndarray, num_modes: int, min_count: int = 1) -> int:
    """Number of modes with at least ``min_count`` samples (the Stacked MNIST count)."""
    counts = np.bincount(np.asarray(fake_labels, dtype=np.int64).ravel(), minlength=num_modes)
    return int((counts >= min_count).sum())


def class_kl(fake_labels: torch.Tensor | np.ndarray, real_hist: np.ndarray) -> float:
    """KL(p_gen || p_real) in nats between the class histogram of ``fake_labels`` and ``real_hist``."""
    real_hist = np.asarray(real_hist, dtype=np.float64)
    p = class_histogram(fake_labels, len(real_hist))
    q = np.maximum(real_hist / real_hist.sum(), _EPS)
    nz = p > 0  # 0 log 0 = 0: classes the generator misses add nothing
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))
