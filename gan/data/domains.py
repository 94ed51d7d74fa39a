"""Domain data for the translate task: the embedded digits domains and a folder per domain.

    prepare:
      source: digits_domains            # embedded default, no download
      domains: [plain, dilated_inverted]  # CycleGAN/pix2pix: two; StarGAN: [plain, inverted, dilated]
    prepare:
      source: domains                   # prepare.path/<domain>/*.png, one sub-folder per domain
      path: data/raw/horses_zebras

The embedded default splits scikit-learn's bundled digits into one disjoint share per
domain (stratified by digit), renders each share under its domain's fixed transform
and keeps, for every image, the same digit under every domain (``oracle`` [K, C, S, S]):
the true mapping is known, so translations can be scored against it, while training
only ever sees unpaired shares. The digit class is kept as ``content``. Labels ``y``
are domain indices; the manifest names the domains.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gan.config import PrepareConfig
from gan.data.preprocess import to_array
from gan.data.sources import Item, _file_item, _files_below
from gan.errors import DataError


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return ((x + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


def digit_transform(name: str, image: np.ndarray) -> np.ndarray:
    """One domain's fixed transform of a uint8 ``[S, S]`` digit (white strokes on black).

    plain: as is; inverted: 255 - x; dilated: a grey dilation that thickens strokes (a
    2x2 window at 8 px, 3x3 above); dilated_inverted: both (CycleGAN's default domain B).
    """
    from scipy.ndimage import grey_dilation

    out = image
    if "dilated" in name:
        k = 2 if image.shape[-1] <= 8 else 3
        out = grey_dilation(out, size=(k, k))
    if "inverted" in name:
        out = 255 - out
    return out


def digits_domains(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """One disjoint share of the bundled digits per domain in ``prepare.domains``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # [N, 8, 8]
    names, k, size = list(cfg.domains), len(cfg.domains), cfg.image_size
    rng = np.random.default_rng(cfg.seed)
    share = np.zeros(len(raw), dtype=np.int64)
    for digit in np.unique(bunch.target):  # every domain sees every digit in equal parts
        idx = rng.permutation(np.flatnonzero(bunch.target == digit))
        share[idx] = np.arange(len(idx)) % k
    items: list[Item] = []
    for i in range(len(raw)):
        base = _to_uint8(to_array(raw[i], size, 1))[0]  # [S, S]: transforms act at the training size
        renders = [digit_transform(name, base) for name in names]
        d = int(share[i])
        items.append(Item(f"digits[{i}]:{names[d]}", d, _const(renders[d]), content=int(bunch.target[i]),
                          oracle=_stack(renders, cfg.channels)))  # fmt: skip
    return items, names


def domain_folders(cfg: PrepareConfig) -> tuple[list[Item], list[str]]:
    """``prepare.path/<domain>/*``: one sub-folder per domain, at least two (unpaired)."""
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"prepare.path: {root} is not a directory; point it at a folder with one sub-folder of images per domain.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DataError(f"prepare.path: {root} has {len(folders)} domain sub-folders; the domains source needs at least two (one per domain).")
    items: list[Item] = []
    for label, folder in enumerate(folders):
        files = _files_below(folder, [])  # images at any depth of a domain folder, as for class folders
        if not files:
            raise DataError(f"domain folder {folder} has no images; add PNG/JPEG/WebP files or remove the folder.")
        items += [_file_item(f, label) for f in files]
    return items, [f.name for f in folders]


def _const(array: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: array


def _stack(renders: list[np.ndarray], channels: int) -> Callable[[], np.ndarray]:
    """The same digit under every domain: float32 ``[K, C, S, S]`` in [-1, 1]."""
    return lambda: np.stack([to_array(r, r.shape[-1], channels) for r in renders])
