"""A deterministic, stratified train/validation split from a seed.

    is_val = split_mask(labels, val_fraction=0.2, seed=0)   # bool [N]

Each class contributes round(val_fraction * n_class) examples (at least one when
the class has two or more), chosen by a seeded permutation: the same labels and
seed always give the same split, on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_mask(labels: Sequence[int | None], val_fraction: float, seed: int) -> np.ndarray:
    """Boolean ``[N]``: True where the example goes to the validation split."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    groups: dict[int | None, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    for key in sorted(groups, key=lambda k: (k is None, k if k is not None else 0)):
        idx = np.asarray(groups[key])
        k = int(round(val_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)  # both splits see every class
        else:
            k = 0
        mask[rng.permutation(idx)[:k]] = True
    return mask
