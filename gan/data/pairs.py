"""Super-resolution pairs: high-resolution patches and their degraded low-resolution versions.

    prepare:                      # params.yaml
      source: photos              # or any image folder (image_folder, npz, torchvision)
      channels: 3
      pairs: {scale: 4, patch_size: 64, patches_per_image: 64, blur: 0.0, noise: 0.0, val_size: 0}

    python pipelines/prepare.py   # -> data/prepared/ as below

The split is by image (a seeded permutation, ``prepare.val_fraction``): validation images
are never cut into training patches. The degradation, applied to each whole image
before patches are cut (so patch borders see real neighbours):

    1. crop the image to a multiple of ``scale`` (bottom/right rows and columns)
    2. optional Gaussian blur of std ``blur`` (high-resolution pixels)
    3. antialiased bicubic down-sampling by ``scale`` (PIL's BICUBIC filter widens its
       support by the factor when reducing, as MATLAB's ``imresize`` does)
    4. optional Gaussian noise of std ``noise`` (0..255 units); rounded to uint8, as a
       stored low-resolution image is

Layout (float32 in [-1, 1], ``[n, C, H, W]``)::

    train/x-00000.npy    HR patches [n, C, P, P]         train/lr-00000.npy  LR [n, C, P/s, P/s]
    val/x-00000.npy      HR patches of the validation images (for featurize), val/lr-00000.npy
    val/full/hr-00000.npy, lr-00000.npy   one whole validation image each [1, C, H, W] (val_size crops it)
    manifest.json        kind "pairs", scale, patch_size, counts, the validation images' names and sizes
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from gan.atomic import atomic_dir, atomic_write_json
from gan.config import PairsConfig, PrepareConfig
from gan.data.preprocess import to_pil
from gan.data.shards import FULL, common_manifest
from gan.data.sources import list_source
from gan.data.split import split_mask
from gan.errors import DataError

FORMAT = "gan-pairs/1"


def degrade(hr: np.ndarray, scale: int, blur: float = 0.0, noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 ``[H, W, C]`` (H, W multiples of ``scale``) -> its low-resolution uint8 ``[H/s, W/s, C]`` (steps 2-4 above)."""
    h, w = hr.shape[:2]
    img = Image.fromarray(hr[..., 0] if hr.shape[-1] == 1 else hr)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    lr = np.asarray(img.resize((w // scale, h // scale), Image.Resampling.BICUBIC), dtype=np.float64)
    if noise > 0:
        lr = lr + (rng or np.random.default_rng(0)).normal(0.0, noise, lr.shape)
    lr = np.clip(np.round(lr), 0, 255).astype(np.uint8)
    return lr[..., None] if lr.ndim == 2 else lr


def to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 ``[..., H, W, C]`` -> float32 ``[..., C, H, W]`` in [-1, 1]."""
    return np.moveaxis(x.astype(np.float32) / 127.5 - 1.0, -1, -3)


def prepare_pairs(cfg: PrepareConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the pairs layout above into ``out_dir`` atomically; return the manifest."""
    pairs: PairsConfig = cfg.pairs  # type: ignore[assignment]
    s, p = pairs.scale, pairs.patch_size
    ignored: list[dict[str, str]] = []
    items, _ = list_source(cfg, ignored)
    if len(items) < 2:
        raise DataError(f"prepare.source {cfg.source} gives {len(items)} image; super-resolution pairs need at least 2 (one for validation).")
    is_val = split_mask([None] * len(items), cfg.val_fraction, cfg.seed)
    digest = hashlib.sha256()
    skipped: list[dict[str, str]] = []
    val_images: list[dict[str, Any]] = []
    counts = {"train": 0, "val": 0}
    with atomic_dir(out_dir) as tmp:
        writers = {split: _PairWriter(tmp / split, cfg.shard_size) for split in ("train", "val")}
        (tmp / "val" / FULL).mkdir(parents=True)
        for index, (item, val) in enumerate(zip(items, is_val, strict=True)):
            hr = _load(item, cfg, skipped)
            if hr is None:
                continue
            if min(hr.shape[:2]) < p:
                if cfg.on_bad_file == "fail":
                    raise DataError(f"{item.name} is {hr.shape[1]}x{hr.shape[0]}, smaller than prepare.pairs.patch_size {p}; lower the patch size or remove the image.")
                skipped.append({"file": item.name, "reason": f"smaller than patch_size {p}"})
                continue
            rng = np.random.default_rng([cfg.seed, index])
            split = "val" if val else "train"
            if val and pairs.val_size:
                hr = _centre_crop(hr, pairs.val_size)
            hr = hr[: hr.shape[0] // s * s, : hr.shape[1] // s * s]  # step 1
            lr = degrade(hr, s, pairs.blur, pairs.noise, rng)
            if val:
                k = len(val_images)
                np.save(tmp / "val" / FULL / f"hr-{k:05d}.npy", to_unit(hr[None]))
                np.save(tmp / "val" / FULL / f"lr-{k:05d}.npy", to_unit(lr[None]))
                val_images.append({"name": item.name, "height": int(hr.shape[0]), "width": int(hr.shape[1])})
            # aligned random crops: the LR patch at (y/s, x/s) is exactly the HR patch's degradation
            ys = rng.integers(0, (hr.shape[0] - p) // s + 1, pairs.patches_per_image) * s
            xs = rng.integers(0, (hr.shape[1] - p) // s + 1, pairs.patches_per_image) * s
            for y, x in zip(ys, xs, strict=True):
                hp, lp = hr[y : y + p, x : x + p], lr[y // s : (y + p) // s, x // s : (x + p) // s]
                writers[split].add(to_unit(hp), to_unit(lp))
                counts[split] += 1
            digest.update(f"{split}:{item.name}".encode())
            digest.update(hr.tobytes())
            digest.update(lr.tobytes())
        for w in writers.values():
            w.flush()
        if counts["train"] == 0 or not val_images:
            raise DataError(f"prepare.source {cfg.source} left no {'training' if counts['train'] == 0 else 'validation'} image after the split; add images or change prepare.val_fraction.")
        manifest = {
            **common_manifest(format=FORMAT, source=cfg.source, settings=cfg.model_dump(), channels=cfg.channels, image_size=p, class_names=[],
                              counts={split: {"total": counts[split], "per_class": []} for split in counts},
                              shards={split: w.shards for split, w in writers.items()}, digest=digest.hexdigest(), skipped=skipped,
                              ignored=ignored),  # fmt: skip
            "kind": "pairs",
            "scale": s,
            "patch_size": p,
            "lr_size": p // s,
            "degradation": {"resize": "bicubic, antialiased (PIL)", "blur": pairs.blur, "noise": pairs.noise},
            "val_images": val_images,
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _load(item: Any, cfg: PrepareConfig, skipped: list[dict[str, str]]) -> np.ndarray | None:
    """uint8 ``[H, W, C]`` in ``prepare.channels``; a bad file fails or is recorded per ``on_bad_file``."""
    try:
        img = to_pil(item.load()).convert("L" if cfg.channels == 1 else "RGB")
    except Exception as err:  # PIL raises many types
        if cfg.on_bad_file == "fail":
            raise DataError(f"{item.name} cannot be read as an image ({type(err).__name__}); fix or remove it, or set prepare.on_bad_file: skip.") from None
        skipped.append({"file": item.name, "reason": type(err).__name__})
        return None
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    h, w = x.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[top : top + size, left : left + size]


class _PairWriter:
    """Buffer up to ``shard_size`` pairs, then write ``x-NNNNN.npy`` (HR) and ``lr-NNNNN.npy``."""

    def __init__(self, folder: Path, shard_size: int) -> None:
        self.folder, self.shard_size = folder, shard_size
        folder.mkdir(parents=True, exist_ok=True)
        self._hr: list[np.ndarray] = []
        self._lr: list[np.ndarray] = []
        self.shards: list[dict[str, int]] = []

    def add(self, hr: np.ndarray, lr: np.ndarray) -> None:
        self._hr.append(hr)
        self._lr.append(lr)
        if len(self._hr) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._hr:
            return
        idx = len(self.shards)
        np.save(self.folder / f"x-{idx:05d}.npy", np.stack(self._hr))
        np.save(self.folder / f"lr-{idx:05d}.npy", np.stack(self._lr))
        self.shards.append({"index": idx, "count": len(self._hr)})
        self._hr, self._lr = [], []
