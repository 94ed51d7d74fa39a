"""Raw data -> versioned, training-ready shards + manifest.json (the prepare stage's library).

    manifest = prepare_dataset(params.prepare, out_dir="data/prepared")

Items are listed first (cheap), split by label, then decoded and written in
shards of ``shard_size``: memory is bounded by one shard per split whatever the
data set's size. Everything is written into a temporary directory that replaces
``out_dir`` only when complete.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from gan.atomic import atomic_dir, atomic_write_json
from gan.config import PrepareConfig
from gan.data.preprocess import to_array
from gan.data.shards import MANIFEST, ShardWriter
from gan.data.sources import Item, list_source
from gan.data.split import split_mask
from gan.errors import DataError

FORMAT = "gan-prepared/1"


def prepare_dataset(cfg: PrepareConfig, out_dir: str | os.PathLike, progress: bool = False) -> dict[str, Any]:
    """Write ``out_dir`` (train/, val/, manifest.json) from ``cfg``; return the manifest."""
    items, class_names = list_source(cfg)
    labelled = _labelled(items)
    is_val = split_mask([it.label for it in items], cfg.val_fraction, cfg.seed)
    skipped: list[dict[str, str]] = []
    stats = _ChannelStats(cfg.channels)
    digest = hashlib.sha256()
    with atomic_dir(out_dir) as tmp:
        writers = {s: ShardWriter(tmp / s, cfg.shard_size, labelled) for s in ("train", "val")}
        counts = {s: [0] * len(class_names) for s in writers}
        for item, val in zip(items, is_val, strict=True):
            x = _decode(item, cfg, skipped)
            if x is None:
                continue
            split = "val" if val else "train"
            writers[split].add(x, item.label)
            # the hash covers every byte written and where it went: a changed split changes it
            digest.update(split.encode())
            digest.update(x.tobytes())
            digest.update(str(item.label).encode())
            if labelled:
                counts[split][item.label] += 1
            if split == "train":
                stats.add(x)
        for w in writers.values():
            w.flush()
        _check_nonempty(writers, class_names, counts, labelled)
        manifest = {
            "format": FORMAT,
            "source": cfg.source,
            "settings": cfg.model_dump(),
            "image_size": cfg.image_size,
            "channels": cfg.channels,
            "shape": [cfg.channels, cfg.image_size, cfg.image_size],
            "value_range": [-1.0, 1.0],
            "labelled": labelled,
            "num_classes": len(class_names) if labelled else 0,
            "class_names": class_names if labelled else [],
            "counts": {s: {"total": w.count, "per_class": counts[s] if labelled else []} for s, w in writers.items()},
            "shards": {s: w.shards for s, w in writers.items()},
            "mean": stats.mean(),
            "std": stats.std(),
            "hash": digest.hexdigest(),
            "skipped": skipped,
            # no wall-clock time here: the manifest is a dependency of every later stage, so
            # it must be the same bytes for the same data and params (the stage times itself)
        }
        atomic_write_json(tmp / MANIFEST, manifest)
    return manifest


def _labelled(items: list[Item]) -> bool:
    has = {it.label is not None for it in items}
    return has == {True}


def _decode(item: Item, cfg: PrepareConfig, skipped: list[dict[str, str]]) -> np.ndarray | None:
    """Load and preprocess one item; on a bad file fail or record it, per ``on_bad_file``."""
    try:
        return to_array(item.load(), cfg.image_size, cfg.channels)
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else 'unreadable'}"
        if cfg.on_bad_file == "fail":
            raise DataError(f"{item.name} cannot be read as an image ({reason}); fix or remove it, or set prepare.on_bad_file: skip.") from None
        skipped.append({"file": item.name, "reason": reason})
        return None


def _check_nonempty(writers: dict[str, ShardWriter], class_names: list[str], counts: dict, labelled: bool) -> None:
    if writers["train"].count == 0:
        raise DataError("no image could be prepared (every file was skipped as unreadable); check prepare.path and manifest reasons.")
    if labelled:
        empty = [class_names[c] for c, n in enumerate(counts["train"]) if n == 0]
        if empty:
            raise DataError(f"class '{empty[0]}' has no readable images in the training split; add images or remove the class.")


class _ChannelStats:
    """Streaming per-channel mean/std in the [-1, 1] space (sums in float64)."""

    def __init__(self, channels: int):
        self.n = 0
        self.s = np.zeros(channels)
        self.ss = np.zeros(channels)

    def add(self, x: np.ndarray) -> None:  # x: [C, H, W]
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        self.n += flat.shape[1]
        self.s += flat.sum(1)
        self.ss += (flat**2).sum(1)

    def mean(self) -> list[float]:
        return (self.s / max(self.n, 1)).round(6).tolist()

    def std(self) -> list[float]:
        m = self.s / max(self.n, 1)
        return np.sqrt(np.maximum(self.ss / max(self.n, 1) - m**2, 0)).round(6).tolist()


