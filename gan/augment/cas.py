"""Classification Accuracy Score (Ravuri & Vinyals 2019): does synthetic data train a classifier?

    acc = classification_accuracy(train_x, train_y, test_x, test_y, num_classes, epochs, batch_size, lr, seed)
"""

from __future__ import annotations

from typing import Any

import numpy as np

# ---------------------------------------------------------------- Classification Accuracy Score


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 images (0..255) -> float32 in [-1, 1], the prepared data's range."""
    return images.astype(np.float32) / 127.5 - 1.0


def real_slice(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random rows of each class (all rows of a smaller class)."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == k))[:per_class] for k in np.unique(y)]
    return np.sort(np.concatenate(picks))


def small_classifier(channels: int, num_classes: int) -> Any:
    """Two 3x3 conv blocks and a linear layer: ``[N, C, S, S] -> logits [N, K]`` for any S >= 8.

    Deliberately small (about 0.3 M multiply-adds per 16x16 image): CAS compares
    training sets, not classifiers, and the stage must stay fast on a laptop CPU.
    """
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [N, 16, S/2, S/2]
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # [N, 32, S/4, S/4]
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128, num_classes),  # [N, 128] -> [N, K]
    )  # fmt: skip


def train_classifier(x: np.ndarray, y: np.ndarray, num_classes: int, epochs: int, batch_size: int, lr: float, seed: int) -> Any:
    """Fit :func:`small_classifier` with Adam and cross-entropy; deterministic for ``seed``.

    The global torch RNG is left as it was (initialisation runs in a forked RNG state).
    """
    import torch
    import torch.nn.functional as F

    xt, yt = torch.from_numpy(np.array(x, dtype=np.float32)), torch.from_numpy(np.array(y, dtype=np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = small_classifier(xt.shape[1], num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def accuracy(net: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``net`` on ``(x, y)``."""
    import torch

    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.array(x[start : start + batch_size], dtype=np.float32))  # a copy: x may be a read-only memmap
            correct += int((net(xb).argmax(1).numpy() == np.asarray(y[start : start + batch_size])).sum())
    return correct / len(x)


def classification_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    num_classes: int, epochs: int, batch_size: int, lr: float, seed: int,
) -> float:  # fmt: skip
    """Train on ``(train_x, train_y)``, return the accuracy on the real ``(test_x, test_y)``.

    With synthetic training data only, this is the Classification Accuracy Score (CAS) of
    Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative Models".
    """
    net = train_classifier(train_x, train_y, num_classes, epochs, batch_size, lr, seed)
    return accuracy(net, test_x, test_y)
